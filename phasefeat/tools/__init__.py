"""What sits around the pipeline: pictures, synthetic data and other frameworks.

figures (maps, previews and the atomic savefig), phantom and demo_data (synthetic
radiograph-like images, never patient data), transforms and torch_data (ENH as a
PyTorch/MONAI transform and a store as a ``torch.utils.data.Dataset``).
"""
