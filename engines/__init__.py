"""facegate inference layer: detector, alignment, recognition and quality models.

Depends on numpy, OpenCV and ONNX Runtime; TensorRT and pycuda only lazily. Imports
neither ``gate`` nor ``trainer``.
"""
