"""Networks: what is trained and what a loss is made of.

    networks    the GCN paper's networks: generator F, discriminator / auto-encoder (Phi lives inside), bicubic
    strategies  the registry of strategies, one entry per way of training the generator (its loss, its Phi)
    weights     the ImageNet backbones' weights (AlexNet, VGG, SqueezeNet, ResNet-50), offline-first
    upscale     a trained generator on images of any size, tile by tile
"""
