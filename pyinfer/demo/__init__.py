"""The demo's data: dense Fashion-MNIST models and a slice of the test set (``pyinfer demo``;
made by ``scripts/make_demo_model.py``)."""
