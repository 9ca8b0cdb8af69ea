"""On-device execution: deploy bundle, ONNX export, backends, Jetson profiles, executor.

The robot-side modules (bundle, preprocess, backends.onnxrt, jetson, executor) import
without torch, so a Jetson runs the ONNX Runtime backend from the core install.
"""
