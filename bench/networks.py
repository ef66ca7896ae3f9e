"""What the bench scripts share: a network named as on train_nn.py's command
line ("VARIANT DEPTH [WIDTH]", e.g. "normal 18", "wide 2 4"), its paper-recipe
training step, and a batch of random images to time it on."""


def parse(network):
    """(variant, depth, width) of "VARIANT DEPTH [WIDTH]"; width 1 if absent."""
    parts = network.split()
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 1


def paper_training_step(network):
    """(step, recipe): the network's training step under its paper recipe,
    compiled, at learning rate 0.1. Import engine first (it configures Theano);
    convolutions follow engine.ops.DEFAULT_ALGO as it is when this is called."""
    import numpy as np
    import models
    import train_nn
    variant, depth, width = parse(network)
    info = models.network_info(variant, depth, width, "paper", "cifar10")
    recipe = train_nn.resolve_recipe("paper", variant)
    step, learning_rate, _ = train_nn.compile_training_step(models.Network(info), recipe)
    learning_rate.set_value(np.float32(0.1))
    return step, recipe


def inference_pass(network):
    """The network's compiled inference pass (deterministic: running averages),
    as test_model.py evaluates it; convolutions follow engine.ops.DEFAULT_ALGO
    as it is when this is called."""
    import models
    variant, depth, width = parse(network)
    net = models.Network(models.network_info(variant, depth, width, "paper", "cifar10"))
    net.compile_predict()
    return net.predict


def random_batch(batch_size, seed=0):
    """(images, labels): normal float32 images of 3x32x32 and labels 0-9."""
    import numpy as np
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch_size, 3, 32, 32)).astype(np.float32),
            rng.integers(0, 10, batch_size).astype(np.int32))
