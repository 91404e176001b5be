"""The file MLflow logs as the model's code ("models from code"): loading the model runs it, which imports the
class from the installed package. Nothing else belongs here."""

from mlflow.models import set_model

from pipeline.serving.classifier import AlexNetClassifier

set_model(AlexNetClassifier())
