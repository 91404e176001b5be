"""The trained net as a product: an MLflow pyfunc model that takes images (JPEG bytes, or uint8 arrays of any
size) and returns the top-5 classes, with the paper's test-time preprocessing."""
