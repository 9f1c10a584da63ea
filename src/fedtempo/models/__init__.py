"""Model registry (logreg, mlp, cnn-s, LEAF FEMNIST CNN, char LSTM) and FLOP/size profiles."""

from fedtempo.models.profile import ModelProfile, build_model, profile_model
from fedtempo.models.zoo import MODELS

__all__ = ["MODELS", "ModelProfile", "build_model", "profile_model"]
