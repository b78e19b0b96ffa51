"""The int8 text encoder for the CPU: each space's GRU as an ONNX ``Loop`` of MatMuls, weights int8.

Why not quantise the exported graph as it is: onnxruntime's dynamic quantisation leaves the ONNX
``GRU`` op in fp32 (it quantises ``LSTM``, ``MatMul``, ``Gather``… but not ``GRU``), and batch-1
encoding is bound by reading the recurrent weights (3·1024×1024 floats per space per token). So
the cell is written out: word embedding (``Gather``) → input projection for every token at once
(``MatMul``) → a ``Loop`` over the tokens whose body is the GRU step, ``h @ W_hh`` as a
``MatMul`` → output at the last real token (or the running maximum of the states) →
L2-normalise. ``quantize_dynamic`` then turns every ``MatMul`` (inside the loop too) into int8
weights with activations quantised per call, and the embedding table into int8 rows. Measured at
the paper's sizes (``benchmarks/text_encoder.py``).

``reduce_range`` (7-bit weights) is not optional: on CPUs without AVX-VNNI (this project's AVX2
machines) onnxruntime multiplies u8 × s8 with ``vpmaddubsw``, whose int16 sums saturate with full
8-bit weights — measured here, max |diff| against fp32 went from 1.8e-2 (cosine 0.989) to 7e-4.

Every space's step runs in the same loop body, their hidden states stacked ``[spaces, batch, H]``
(half the per-step node overhead of one loop per space; one batched MatMul over the stacked
weights was 3× slower: onnxruntime prepacks only 2-D weights). The last real token is kept by
forcing the update gate shut after it: its pre-activation gets +1e4 where ``t >= length``, so
``z = 1`` and ``h`` stays (no ``Where`` per step). Lengths below 1 act as 1, as in torch's
``gather`` at ``lengths - 1`` clamped at 0. With ``text_pooling="max"`` the loop also carries the
running maximum of the states: after a caption's end ``h`` repeats its last real state, so the
maximum over every step is the maximum over the real tokens, again with no mask per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jemc_infer.config import TextPooling
from jemc_infer.errors import InputError
from jemc_infer.specs import GraphSpec

OPSET = 18
SHUT = 1e4  # added to the update gate's pre-activation after a caption's end: sigmoid → exactly 1.0 in fp32


def gru_weights(model: Any) -> list[dict[str, np.ndarray]]:
    """Each space's text-encoder weights (``jemc_infer.nn.JEMC``), in the order of the spec's outputs.

    Raises:
        InputError: A text encoder that is not the 1-layer, unidirectional, biased GRU this graph writes out.
    """
    out = []
    for name in (s.name for s in model.config.spaces):
        space = model.spaces[name]
        rnn = space.text.rnn
        if rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias or not rnn.batch_first:
            raise InputError(f"space {name!r} text encoder | GRU layers={rnn.num_layers}, bidirectional={rnn.bidirectional}, "
                             f"bias={rnn.bias} | expected the 1-layer unidirectional GRU with biases the int8 graph writes out")
        out.append({k: v.detach().float().cpu().numpy() for k, v in {
            "embed": space.text.embed.weight, "w_ih": rnn.weight_ih_l0, "w_hh": rnn.weight_hh_l0,
            "b_ih": rnn.bias_ih_l0, "b_hh": rnn.bias_hh_l0}.items()})
    return out


class _Graph:
    """Collects nodes and initialisers; ``op`` returns the output name(s)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: list[str], **attrs: Any) -> Any:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def text_loop_model(weights: list[dict[str, np.ndarray]], spec: GraphSpec, confidence: float = 0.0,
                    pooling: str = "last") -> Any:
    """The fp32 text graph in MatMul form (an ``onnx.ModelProto``), same inputs and outputs as ``spec``.

    Args:
        weights: :func:`gru_weights`, one per output of ``spec`` (``text_<space>``).
        spec: The text graph's spec (``ids`` int64 [batch, seq], ``lengths`` int64 [batch]).
        confidence: ``ModelConfig.text_confidence``: 0 L2-normalises each output; γ > 0 scales
            the unit vector by the pooled state's norm to the power γ (γ = 1: the state as it is).
        pooling: ``ModelConfig.text_pooling``: ``"last"`` keeps the state at the last real token,
            ``"max"`` each dimension's maximum over the real tokens' states.
    """
    keep_max = TextPooling(pooling) is TextPooling.MAX
    from onnx import TensorProto, helper, numpy_helper

    spaces, hidden = len(weights), weights[0]["w_hh"].shape[1]
    g, body = _Graph(), _Graph()
    for name, value in {"i0": [0], "i1": [1], "i2": [2], "i3": [3], "one": 1, "zero": 0}.items():
        g.const(name, np.array(value, np.int64))
    g.const("hidden_shape", np.array([hidden], np.int64))
    g.const("spaces_shape", np.array([spaces], np.int64))
    if confidence != 1:
        g.const("eps", np.array(1e-12, np.float32))  # F.normalize's eps
        g.const("power", np.array(confidence - 1, np.float32))
    g.const("shut", np.concatenate([np.zeros(hidden), np.full(hidden, SHUT), np.zeros(hidden)]).astype(np.float32))
    shape = g.op("Shape", ["ids"], ["ids_shape"])
    batch = g.op("Slice", [shape, "i0", "i1"], ["batch"])
    steps = g.op("Squeeze", [g.op("Slice", [shape, "i1", "i2"], ["seq1"]), "i0"], ["seq"])
    h0 = g.op("ConstantOfShape", [g.op("Concat", ["spaces_shape", batch, "hidden_shape"], ["h0_shape"], axis=0)], ["h0"],
              value=numpy_helper.from_array(np.zeros(1, np.float32)))
    # after[t, b] = t >= max(lengths[b], 1), as float [seq, 1, batch, 1]: which steps keep h as it is
    t = g.op("Unsqueeze", [g.op("Range", ["zero", steps, "one"], ["t"]), "i1"], ["t_col"])
    last = g.op("Unsqueeze", [g.op("Max", ["lengths", "one"], ["lengths1"]), "i0"], ["lengths_row"])
    after = g.op("Cast", [g.op("GreaterOrEqual", [t, last], ["after_bool"])], ["after"], to=TensorProto.FLOAT)
    after = g.op("Unsqueeze", [after, g.op("Concat", ["i1", "i3"], ["axes13"], axis=0)], ["after4"])
    projected = []
    for s, w in enumerate(weights):
        x = g.op("Gather", [g.const(f"embed_{s}", w["embed"]), "ids"], [f"words_{s}"], axis=0)  # [batch, seq, word_dim]
        x = g.op("MatMul", [x, g.const(f"w_ih_{s}", w["w_ih"].T)], [f"xw_{s}"])
        x = g.op("Add", [x, g.const(f"b_ih_{s}", w["b_ih"])], [f"xb_{s}"])  # [batch, seq, 3H]: gates r, z, n
        projected.append(g.op("Unsqueeze", [x, "i0"], [f"xu_{s}"]))
        g.const(f"w_hh_{s}", w["w_hh"].T)
        g.const(f"b_hh_{s}", w["b_hh"])
    x = g.op("Transpose", [g.op("Concat", projected, ["x_sbl"], axis=0)], ["x_lsb"], perm=[2, 0, 1, 3])  # [seq, spaces, batch, 3H]
    x = g.op("Add", [x, g.op("Mul", [after, "shut"], ["after_shut"])], ["x_steps"])
    # the step: h [spaces, batch, H] → h'; r, z = σ(x_rz + h W_rz + b_rz); n = tanh(x_n + r ⊙ (h W_n + b_n)); h' = n + z ⊙ (h − n)
    hs = body.op("Split", ["h"], [f"h_{s}" for s in range(spaces)], axis=0, num_outputs=spaces) if spaces > 1 else "h"
    hs = [hs] if isinstance(hs, str) else hs
    hh = [body.op("Add", [body.op("MatMul", [h, f"w_hh_{s}"], [f"hw_{s}"]), f"b_hh_{s}"], [f"hb_{s}"]) for s, h in enumerate(hs)]
    hh = body.op("Concat", hh, ["hh"], axis=0) if spaces > 1 else hh[0]
    g.const("rz_n", np.array([2 * hidden, hidden], np.int64))
    x_rz, x_n = body.op("Split", [body.op("Gather", [x, "step"], ["x_t"], axis=0), "rz_n"], ["x_rz", "x_n"], axis=2)
    h_rz, h_n = body.op("Split", [hh, "rz_n"], ["h_rz", "h_n"], axis=2)
    r, z = body.op("Split", [body.op("Sigmoid", [body.op("Add", [x_rz, h_rz], ["a_rz"])], ["rz"])], ["r", "z"], axis=2, num_outputs=2)
    n = body.op("Tanh", [body.op("Add", [x_n, body.op("Mul", [r, h_n], ["r_hn"])], ["a_n"])], ["n"])
    body.op("Add", [n, body.op("Mul", [z, body.op("Sub", ["h", n], ["h_minus_n"])], ["z_d"])], ["h_next"])
    body.op("Identity", ["cond"], ["cond_next"])
    state = [spaces, "batch", hidden]
    carried = [("h", "h_next")] + ([("m", "m_next")] if keep_max else [])
    if keep_max:
        body.op("Max", ["m", "h_next"], ["m_next"])
        g.op("ConstantOfShape", ["h0_shape"], ["m0"], value=numpy_helper.from_array(np.full(1, -np.inf, np.float32)))
    step = helper.make_graph(body.nodes, "gru_step",
                             [helper.make_tensor_value_info("step", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
                             + [helper.make_tensor_value_info(i, TensorProto.FLOAT, state) for i, _ in carried],
                             [helper.make_tensor_value_info("cond_next", TensorProto.BOOL, [])]
                             + [helper.make_tensor_value_info(o, TensorProto.FLOAT, state) for _, o in carried])
    g.op("Loop", [steps, "", h0] + (["m0"] if keep_max else []), ["h_last"] + (["m_last"] if keep_max else []), body=step)
    pooled = "m_last" if keep_max else "h_last"
    finals = g.op("Split", [pooled], [f"h_last_{s}" for s in range(spaces)], axis=0, num_outputs=spaces) if spaces > 1 else pooled
    finals = [finals] if isinstance(finals, str) else finals
    for s, out in enumerate(spec.outputs):
        if confidence == 1:  # ModelConfig.text_confidence 1: the pooled state as it is
            g.op("Squeeze", [finals[s], "i0"], [out.name])
            continue
        v = g.op("Squeeze", [finals[s], "i0"], [f"v_{s}"])
        norm = g.op("Max", [g.op("ReduceL2", [v, "i1"], [f"norm_{s}"], keepdims=1), "eps"], [f"norm_eps_{s}"])
        if confidence == 0:
            g.op("Div", [v, norm], [out.name])
        else:  # v · max(|v|, ε)^(γ-1), as jemc_infer.nn.jemc.confidence_scale
            g.op("Mul", [v, g.op("Pow", [norm, "power"], [f"scale_{s}"])], [out.name])

    def io(t: Any) -> Any:
        kind = {"int64": TensorProto.INT64, "float32": TensorProto.FLOAT}[t.dtype]
        return helper.make_tensor_value_info(t.name, kind, list(t.shape))

    graph = helper.make_graph(g.nodes, "text", [io(t) for t in spec.inputs], [io(t) for t in spec.outputs], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jemc-infer")
    model.ir_version = 9
    return model


def write_text_int8(model: Any, spec: GraphSpec, path: Path) -> None:
    """Write the int8 text graph of a ``JEMC`` model to ``path`` (its fp32 MatMul form beside it, removed after).

    Raises:
        InputError: The text encoders are not the GRU this graph writes out.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name(path.stem + ".matmul.onnx")
    onnx.save(text_loop_model(gru_weights(model), spec, confidence=model.config.text_confidence,
                              pooling=model.config.text_pooling), str(fp32))
    try:
        onnx.checker.check_model(str(fp32), full_check=True)
        # per-tensor weights: per-channel measured no more accurate here, and slower
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gather"], extra_options={"EnableSubgraph": True})
        quantized = onnx.load(str(path))
        _sort_nodes(quantized.graph)  # the quantiser emits the Loop before what its body reads from outside
        onnx.save(quantized, str(path))
    finally:
        fp32.unlink(missing_ok=True)
    onnx.checker.check_model(str(path), full_check=True)


def _outer_names(graph: Any) -> set[str]:
    """Names a (sub)graph's nodes read that it does not define itself: what it takes from outside."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    return {i for n in graph.node for i in [*n.input, *_node_outer(n)] if i and i not in defined}


def _node_outer(node: Any) -> set[str]:
    import onnx

    return {name for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for name in _outer_names(a.g)}


def _sort_nodes(graph: Any) -> None:
    """Order ``graph``'s nodes topologically (stable), counting what subgraphs read from outside."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if {*n.input, *_node_outer(n)} <= ready:
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph {graph.name} | a cycle or an undefined input among {[n.op_type for n in rest]} | expected a DAG")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
