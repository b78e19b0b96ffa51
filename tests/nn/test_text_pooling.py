"""``ModelConfig.text_pooling``: a text encoder keeps its GRU's state at the last real token (the
paper) or each dimension's maximum over the real tokens — in the torch model, the bundle's config
file, the exported ONNX text graph and the quantised int8 text graph (its fp32 MatMul form, with
every ``text_confidence``, is tested in ``tests/nn/test_text_confidence.py``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from support.tiny_text import caption_batch, tiny_jemc  # noqa: E402

from jemc_infer.config import ModelConfig, TextPooling  # noqa: E402
from jemc_infer.errors import InputError  # noqa: E402


def test_the_setting_survives_the_config_file_and_defaults_to_the_paper() -> None:
    config = tiny_jemc(pooling="max").config
    assert ModelConfig.from_json(json.loads(json.dumps(config.to_json()))).text_pooling == "max"
    legacy = config.to_json()
    del legacy["text_pooling"]  # a bundle written before the setting existed
    assert ModelConfig.from_json(legacy).text_pooling == "last"
    with pytest.raises(InputError, match="text_pooling='mean'"):
        tiny_jemc(pooling="mean")


def test_max_pooling_is_the_maximum_over_each_captions_own_words() -> None:
    """Each caption encoded alone (no padding at all): the maximum of its GRU states; padding ids
    change nothing; a length of 0 counts as 1, as the last-token encoder has it."""
    model = tiny_jemc(pooling="max")
    ids, lengths = caption_batch([7, 1, 3, 5, 0])
    with torch.no_grad():
        got = {name: sp.text(ids, lengths, normalize=False) for name, sp in model.spaces.items()}
        other_padding = ids.clone()
        for row, n in enumerate(lengths.tolist()):
            other_padding[row, max(n, 1):] = 3
        again = {name: sp.text(other_padding, lengths, normalize=False) for name, sp in model.spaces.items()}
        for name, sp in model.spaces.items():
            for row, n in enumerate(lengths.tolist()):
                alone, _ = sp.text.rnn(sp.text.embed(ids[row:row + 1, :max(n, 1)]))
                torch.testing.assert_close(got[name][row], alone[0].amax(dim=0))
            torch.testing.assert_close(again[name], got[name])
    last = tiny_jemc(pooling="last")
    with torch.no_grad():
        assert not torch.allclose(last.encode_text(ids, lengths)["object"], model.encode_text(ids, lengths)["object"])


def test_a_max_pooling_bundle_exports_text_graphs_that_pool(tiny_bundle: Path, held_out_data: Path, tmp_path: Path,
                                                            small_limits) -> None:  # noqa: ANN001
    """The fp32 ONNX text graph gives the torch model's embeddings; the int8 one passes its gates
    and stays within their tolerance of them."""
    import onnxruntime as ort

    from jemc_infer.export import onnx as onnx_export
    from jemc_infer.manifest import graph_entry
    from jemc_infer.nn.io import model_from_bundle

    out = tmp_path / "model"
    shutil.copytree(tiny_bundle, out)
    record = json.loads((out / "config.json").read_text(encoding="utf-8"))
    record["model"]["text_pooling"] = "max"
    (out / "config.json").write_text(json.dumps(record), encoding="utf-8")
    onnx_export.export_bundle(out, small_limits, eval_data=held_out_data, only=("text", "video"), text_int8=True, echo=lambda s: None)
    model = model_from_bundle(out)
    assert model.config.text_pooling == "max"
    rng = np.random.default_rng(1)
    ids = rng.integers(4, model.config.vocab_size, size=(6, 9))
    lengths = np.array([9, 1, 4, 6, 2, 3])
    with torch.no_grad():
        want = model.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths))
    for sp in model.spaces.values():
        sp.text.pooling = TextPooling.LAST  # what a graph that ignored the setting would give
    with torch.no_grad():
        ignored = model.encode_text(torch.from_numpy(ids), torch.from_numpy(lengths))
    for precision, tolerance in (("fp32", 1e-5), ("int8", onnx_export.INT8_TOLERANCE)):
        session = ort.InferenceSession(str(out / graph_entry(out, "text", precision).path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"ids": ids, "lengths": lengths})
        for g, name in zip(got, [s.name for s in model.config.spaces], strict=True):
            np.testing.assert_allclose(g, want[name].numpy(), atol=tolerance)
            assert np.abs(g - ignored[name].numpy()).max() > 10 * tolerance
