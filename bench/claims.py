"""The claims this project answers (ids are stable; copied from the project spec, CLAIMS.md).

Each entry: id -> Claim(text paraphrased from the CS231n study notes, what settles it). Which study answers
a claim is written once, in the study file (its `claims` list, studies/*.toml), never here."""

from __future__ import annotations

from typing import NamedTuple


class Claim(NamedTuple):
    text: str  # the claim, paraphrased from the notes
    settles: str  # the measurement that settles it


CLAIMS: dict[str, Claim] = {
    "transfer": Claim(
        "Features learned on a large dataset can be reused: keeping the trained feature extractor and retraining only the classifier head gives a good model for a new 10-way task at a fraction of the cost of retraining everything.",
        "Pretrain on one half of the CIFAR-10 classes (or ImageNet weights when the user has them), transfer to the other half: frozen-features linear head vs full fine-tune vs from scratch, at several target-set sizes (e.g. 50/500/5000 images per class). Accuracy and wall time.",
    ),
    "nonlinearity": Claim(
        "Without activation functions a network of any depth is a linear map and cannot learn non-linear patterns; activations are what let it learn them.",
        "Same deep net with identity activation vs ReLU: the identity net's accuracy matches a single linear (softmax) classifier, and its product of weight matrices reproduces its outputs exactly.",
    ),
    "sigmoid-saturation": Claim(
        "Sigmoid outputs near 0 or 1 have near-zero gradient, so saturated units stop learning.",
        "Per-layer fraction of saturated units and per-layer gradient norm vs depth and epoch, sigmoid vs tanh vs ReLU; accuracy curves.",
    ),
    "convergence-speed": Claim(
        "Faster convergence means the model reaches its final accuracy sooner.",
        "Epochs and seconds to reach a fixed target accuracy, per arm.",
    ),
    "update-size": Claim(
        "The size of a weight's gradient sets how much the weight moves in one step.",
        "Logged update-to-weight ratio per layer (healthy is about 1e-3) and its relation to gradient norm.",
    ),
    "leaky-vs-elu-noise": Claim(
        "ELU saturates for large negative inputs while Leaky ReLU keeps growing, so ELU is more robust to noisy inputs.",
        "Leaky ReLU vs ELU trained and/or tested with Gaussian input noise at several strengths: accuracy drop vs noise.",
    ),
    "input-normalization": Claim(
        "Scaling inputs (0..1, -1..1, or zero mean / unit variance) stabilises and speeds training and improves accuracy compared with raw 0..255 pixels.",
        "Raw vs [0,1] vs [-1,1] vs per-channel standardisation, over a learning-rate grid: divergence rate, time to target, final accuracy.",
    ),
    "pca": Claim(
        "Compressing input features with PCA into fewer decorrelated components cuts computation and speeds learning.",
        "PCA to k components (k from about 32 to 3072) and PCA/ZCA whitening, MLP on top: accuracy vs k and wall time vs k.",
    ),
    "zero-init": Claim(
        "With all weights initialised to zero (or any constant) every neuron receives the same update, so neurons stay identical and the network cannot learn.",
        "Count of distinct hidden units after training (rows of each weight matrix equal within tolerance), accuracy, for zero / constant / random inits.",
    ),
    "small-init-vanish": Claim(
        "Initialising a deep network with small random weights (e.g. N(0, 0.01^2)) makes activations shrink towards zero layer by layer.",
        "Per-layer activation mean/std and histograms at initialisation and after training, 10-layer tanh and ReLU nets: std 0.01 vs 1.0 vs Xavier vs He.",
    ),
    "xavier-vs-he": Claim(
        "He initialisation (variance 2/fan_in) suits ReLU better than Xavier (variance 1/fan_in). Note: the notes say He has the larger denominator; in fact it has the larger numerator, which is why its variance is larger.",
        "Deep plain ReLU nets (about 20 to 30 layers): training curves and per-layer activation std, Xavier vs He; the same with tanh.",
    ),
    "batchnorm": Claim(
        "Batch normalisation (zero mean, unit variance per layer) stabilises and speeds training and protects against vanishing and exploding gradients.",
        "With vs without BN across learning rates and inits: largest stable learning rate, time to target accuracy, gradient-norm spread across layers.",
    ),
    "zero-centered": Claim(
        "Activations that are always positive (sigmoid) force all weight gradients of a neuron to share one sign, giving zig-zag updates and slower learning; zero-centred activations avoid this.",
        "Sigmoid vs tanh vs sigmoid shifted by -0.5 (otherwise identical): fraction of neurons whose weight-gradient entries all share one sign, and convergence speed.",
    ),
    "learning-rate": Claim(
        "A large learning rate gets close fast but cannot settle precisely; a small one is slow but precise; starting large and decaying gets both.",
        "Log-spaced learning-rate grid x schedule (constant, step decay, cosine): loss curves, final accuracy, divergence.",
    ),
    "momentum": Claim(
        "Momentum damps oscillation and speeds progress compared with plain SGD.",
        "SGD vs SGD+momentum vs Nesterov on CIFAR-10 with each optimizer's learning rate tuned; plus trajectories on a 2-D ill-conditioned surface.",
    ),
    "adagrad-per-parameter": Claim(
        "AdaGrad gives frequently/strongly updated parameters a smaller effective learning rate and rarely updated ones a larger one.",
        "Per-parameter effective step (lr / sqrt(sum of squared gradients)) against accumulated gradient: the inverse relation, measured.",
    ),
    "adagrad-decay-rmsprop": Claim(
        "AdaGrad's accumulated squares grow without bound so its steps shrink towards zero over long training; RMSProp replaces the sum by a moving average and keeps learning.",
        "Effective learning rate over steps and accuracy curves over long training, AdaGrad vs RMSProp (and Adam for reference).",
    ),
    "dropout": Claim(
        'Dropout zeroes a random fraction of units during training so no unit relies on others; at test time all units are used and outputs are scaled by the keep probability (or train-time outputs are scaled up, "inverted dropout").',
        "Dropout rate grid (0 to 0.7): train/test accuracy gap and test accuracy; with vs without the test-time scaling: expected activations and accuracy.",
    ),
    "fc-head": Claim(
        "The convolutional part extracts features; a fully connected layer turns them into class scores and sets the number of outputs.",
        "Linear head vs MLP head on the same frozen features.",
    ),
    "resnet-depth": Claim(
        "Residual connections keep information and gradients flowing, so much deeper networks train well where plain networks of the same depth degrade.",
        "Plain vs residual CIFAR ResNets at depths 20/32/44/56 (110 on GPU): training and test error vs depth; first-layer gradient norm.",
    ),
    "localization": Claim(
        "Localization adds a regression head (x, y, w, h, trained with an L2-type loss) beside the classification head; regression predicts continuous values, classification a class.",
        "CIFAR-10 images placed at random positions/scales on a larger canvas: class accuracy and box IoU with a joint classification + regression model; L2 vs smooth-L1.",
    ),
}
