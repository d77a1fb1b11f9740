"""The embedder's ONNX graph, rebuilt from the pinned all-MiniLM-L6-v2 file with ONNX Runtime's fused kernels.

Why: the pinned file is a PyTorch export with about 300 small nodes (attention spelled out as Reshape,
Transpose, MatMul, Where, IsNaN...) whose int8 weights are only storage: ONNX Runtime folds them back to
float32 and runs float32 GEMMs, which already reach this core's float32 peak. A 20-token question then
costs ~7 ms, 256 tokens ~70 ms. The rebuilt graph has the same weights and the same arithmetic, expressed
with the contrib kernels made for BERT (EmbedLayerNormalization, MultiHeadAttention, Gelu; residuals as
Add + LayerNormalization, see build_graph: 67 nodes), and runs the linear layers either in float32 (MatMul,
numerically the original) or in int8 (DynamicQuantizeMatMul on the file's own int8 weights and per-column
scales, with the activations quantized per call: ~3.5x the float32 throughput on AVX512-VNNI).

In int8, the activations of a call share one scale (DynamicQuantizeMatMul's only mode), and a few input
channels of the feed-forward and query/key/value layers carry values 3-20x larger than the rest (channel 99
of the attention LayerNorm outputs reaches ~30 at the [CLS] token, ~2 for a typical channel): they set the
scale, and every other activation keeps only a few of its 256 levels. For the 10 layers where this costs the
most, those channels (`OUTLIER_CHANNELS`) are taken out of the int8 product and multiplied in float32 (Mul by a
0/1 mask, then Gather + a float32 MatMul on their weight rows, added back): cosine with the float32 vector
of the same text mean 0.9991 / min 0.9979 instead of 0.9946 / 0.9876 (400 Banking77 questions), for ~7 % more
time (4 small nodes per layer: ~1.93 ms at 20 tokens against 1.81, 256 tokens ~28 ms against 27).
Tried and dropped (same measurements, one core): a scale per token (ReduceMax + blocked QuantizeLinear +
MatMulIntegerToFloat, since MatMulIntegerToFloat takes only a per-tensor scale and zero point for its
first input: 7 more nodes per layer, 2.28 ms, and it helped less, mean 0.9980, min 0.9937: the outliers are
channels as much as tokens), MatMulNBits 8-bit with accuracy_level 4 (activations quantized per block of
128: mean 0.9993, min 0.9977, but 3.2 ms), the same split on 12 layers (mean 0.9994, min 0.9988, ~2.0 ms)
or on all 18 query/key/value and feed-forward layers (mean 0.9996, min 0.9992, ~2.1 ms).

It is built in memory at start-up from the pinned file (no download, nothing cached on disk): the `onnx`
package reads the file and builds the new model, which is handed to ONNX Runtime serialized.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["DISABLED_OPTIMIZERS", "LAYERS", "OUTLIER_CHANNELS", "build_graph"]

LAYERS = 6
HEADS = 12
HIDDEN = 384
EPSILON = 1e-12  # the model's LayerNorm epsilon
# Fusions the session must not apply to the rebuilt graph (see build_graph).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
# Operator sets the rebuilt graph uses, and the IR version that goes with opset 17 (ONNX 1.12), which every
# ONNX Runtime in the dependency range reads. make_model's default is the installed onnx's newest IR version
# (14 in onnx 1.23: ONNX Runtime 1.32 reads it, 1.18 reads up to 10).
OPSETS = (("", 17), ("com.microsoft", 1))
IR_VERSION = 8
# int8 only: (layer, linear layer) -> the input channels multiplied in float32 instead of int8 (module
# docstring). Measured on 100 Banking77 questions (lines 1000-1099 of banking77-stream-dev.jsonl, not those
# the accuracy was checked on): the channels whose largest |activation| exceeds 3x the median channel's (at most
# 16); the 10 layers are those a greedy search found to gain the most, in this order: (0, output.dense),
# (4, intermediate.dense), (2, output.dense), (1, output.dense), (3, intermediate.dense), (1, intermediate.dense),
# (2, intermediate.dense), (0, intermediate.dense), (4, query/key/value), (3, output.dense); the next two,
# (5, query/key/value) and (3, query/key/value), would add ~0.1 ms at 20 tokens for mean cosine 0.99937 instead of
# 0.99906. The pinned file's sha256 pins the channels too.
OUTLIER_CHANNELS: dict[tuple[int, str], tuple[int, ...]] = {
    (0, "intermediate.dense"): (99, 63, 267, 303),
    (0, "output.dense"): (856, 329, 1096, 691, 1383, 602, 887, 155, 1337, 826, 829, 944, 1163, 1120, 1477, 1058),
    (1, "intermediate.dense"): (99, 63, 223, 267, 157, 338),
    (1, "output.dense"): (607, 1157, 417, 632, 276, 1249),
    (2, "intermediate.dense"): (99, 223, 63, 338, 157),
    (2, "output.dense"): (1004, 218, 1265, 804, 389, 304, 805, 163, 101, 1450, 569),
    (3, "intermediate.dense"): (99, 223, 63, 338, 157),
    (3, "output.dense"): (358, 750, 318, 1085, 201, 1004, 1120, 1228, 892, 119, 111, 166, 879),
    (4, "attention.self"): (99, 338, 157, 223),
    (4, "intermediate.dense"): (99, 223, 127, 63, 157, 338, 319),
}


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int | list[str] = 1, *, domain: str = "",
             **attributes: int | float | str) -> list[str]:
        self._count += 1
        names = outputs if isinstance(outputs, list) else [f"{op}_{self._count}_{i}" for i in range(outputs)]
        node = helper.make_node(op, inputs, names, name=f"{op}_{self._count}", domain=domain or None)
        node.attribute.extend(helper.make_attribute(key, value) for key, value in sorted(attributes.items()))
        self.nodes.append(node)
        return names

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "minilm", inputs, outputs, self.initializers)
        return helper.make_model(graph, producer_name="mmproxy", ir_version=IR_VERSION,
                                 opset_imports=[helper.make_opsetid(domain, version) for domain, version in OPSETS])


# ---- the rebuilt graph ----

def _weights(tensors: dict[str, np.ndarray], nodes: Sequence[onnx.NodeProto]) -> dict[str, str]:
    """Bias name -> name of the weight of the MatMul it is added to (the export names weights val_N)."""
    made_by = {o: n for n in nodes for o in n.output}
    out: dict[str, str] = {}
    for n in nodes:
        if n.op_type == "Add" and len(n.input) == 2 and n.input[1].endswith(".bias"):
            source = made_by.get(n.input[0])
            if source is not None and source.op_type == "MatMul" and source.input[1] + "_q" in tensors:
                out[n.input[1]] = source.input[1]
    return out

def _dequantized(tensors: dict[str, np.ndarray], name: str) -> np.ndarray:
    """The float32 weight the original graph computes (Cast to float, then Mul by the scale)."""
    return (tensors[name + "_q"].astype(np.float32) * tensors[name + "_scale"]).astype(np.float32)


def build_graph(data: bytes, *, int8: bool) -> bytes:
    """The serialized fused model for the pinned file `data`.

    Inputs `input_ids` and `attention_mask` (int32, batch x width, padding on the right); output
    `last_hidden_state` (float32, batch x width x 384), as the original. `int8`: the 36 linear layers
    run as DynamicQuantizeMatMul on the stored int8 weights (activations quantized per tensor, per call)
    instead of float32 MatMul on their dequantized values, except for the input channels of
    `OUTLIER_CHANNELS`, multiplied in float32 by their dequantized weight rows.

    Residual additions stay Add + LayerNormalization: ONNX Runtime's SkipLayerNormalization kernel
    measured ~8x slower than the pair on this CPU (0.49 ms against 0.08 ms at 256 tokens), so the
    session must also disable its SkipLayerNormFusion (see `DISABLED_OPTIMIZERS`).
    """
    original = onnx.load_model_from_string(data).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in original.initializer}
    weight_of = _weights(tensors, original.node)
    g = _Graph()
    prefix = "inner.embeddings."
    # token_type_ids are always 0: its row is added to the word embeddings ahead of time, the same
    # float32 addition the original graph makes first.
    word = _dequantized(tensors, prefix + "word_embeddings.weight")
    word += tensors[prefix + "token_type_embeddings.weight"][0]
    x, mask_index = g.node(
        "EmbedLayerNormalization",
        ["input_ids", "", g.constant("word", word),
         g.constant("position", _dequantized(tensors, prefix + "position_embeddings.weight")), "",
         g.constant("ln_gamma", tensors[prefix + "LayerNorm.weight"]),
         g.constant("ln_beta", tensors[prefix + "LayerNorm.bias"]), "attention_mask"],
        2, domain="com.microsoft", epsilon=EPSILON)

    def linear(layer: int, part: str, source: str) -> str:
        """`source` times the weights of `part` of encoder layer `layer` (query, key and value side by side
        for "attention.self"), plus their biases."""
        p = f"inner.encoder.layer.{layer}.{part}"
        names = [f"{p}.{n}" for n in ("query", "key", "value")] if part == "attention.self" else [p]
        weights = [weight_of[n + ".bias"] for n in names]
        bias = g.constant(names[0] + ".bias+", np.concatenate([tensors[n + ".bias"] for n in names]))
        if not int8:
            w = g.constant(weights[0] + "+", np.concatenate([_dequantized(tensors, w) for w in weights], axis=1))
            return g.node("Add", [g.node("MatMul", [source, w])[0], bias])[0]
        q = np.concatenate([tensors[w + "_q"] for w in weights], axis=1)
        scale = np.concatenate([tensors[w + "_scale"].reshape(-1) for w in weights])
        channels = list(OUTLIER_CHANNELS.get((layer, part), ()))
        if not channels:
            return g.node("DynamicQuantizeMatMul", [source, g.constant(weights[0] + "_q+", q),
                                                    g.constant(weights[0] + "_scale+", scale), "", bias],
                          domain="com.microsoft")[0]
        # The outlier channels: zero in the int8 product, multiplied in float32 (the same float32 weights
        # as the float32 graph's) and added back.
        keep = np.ones(q.shape[0], dtype=np.float32)
        keep[channels] = 0
        masked = g.node("Mul", [source, g.constant(weights[0] + "_keep", keep)])[0]
        product = g.node("DynamicQuantizeMatMul", [masked, g.constant(weights[0] + "_q+", q),
                                                   g.constant(weights[0] + "_scale+", scale), "", bias],
                         domain="com.microsoft")[0]
        rows = g.node("Gather", [source, g.constant(weights[0] + "_outliers", np.array(channels, dtype=np.int64))],
                      axis=-1)[0]
        outlier_weights = (q[channels].astype(np.float32) * scale).astype(np.float32)
        outliers = g.node("MatMul", [rows, g.constant(weights[0] + "_rows", outlier_weights)])[0]
        return g.node("Add", [product, outliers])[0]

    def add_norm(update: str, residual: str, norm: str, output: int | list[str] = 1) -> str:
        total = g.node("Add", [update, residual])[0]
        return g.node("LayerNormalization", [total, g.constant(norm + ".weight", tensors[norm + ".weight"]),
                                             g.constant(norm + ".bias", tensors[norm + ".bias"])],
                      output, axis=-1, epsilon=EPSILON)[0]

    for layer in range(LAYERS):
        p = f"inner.encoder.layer.{layer}."
        qkv = linear(layer, "attention.self", x)
        q, k, v = g.node("Split", [qkv], 3, axis=-1)
        context = g.node("MultiHeadAttention", [q, k, v, "", mask_index], domain="com.microsoft",
                         num_heads=HEADS)[0]
        x = add_norm(linear(layer, "attention.output.dense", context), x, p + "attention.output.LayerNorm")
        inner = linear(layer, "intermediate.dense", x)
        gelu = g.node("Gelu", [inner], domain="com.microsoft")[0]
        x = add_norm(linear(layer, "output.dense", gelu), x, p + "output.LayerNorm",
                     ["last_hidden_state"] if layer == LAYERS - 1 else 1)
    return g.model(
        [helper.make_tensor_value_info(name, onnx.TensorProto.INT32, ["batch", "width"])
         for name in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("last_hidden_state", onnx.TensorProto.FLOAT, ["batch", "width", HIDDEN])],
    ).SerializeToString()
