"""``jemc_infer.query`` without an index: the text side's warnings and the errors a front end renders."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jemc_infer.query import SettingError, encode_queries, parse_space_weights, quote, resolve_model
from jemc_infer.text import Vocabulary


class _ZeroTextEngine:
    """Stands in for the text engine: one zero row per text for each space."""

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs["lengths"])
        return {"text_object": np.zeros((n, 4), np.float32), "text_activity": np.zeros((n, 4), np.float32)}


def _bundle() -> SimpleNamespace:
    spaces = [SimpleNamespace(name="object", weight=1.0), SimpleNamespace(name="activity", weight=1.0)]
    return SimpleNamespace(vocab=Vocabulary.build(["a man is cooking"], min_count=1), config=SimpleNamespace(spaces=spaces))


def test_no_known_word_warning_quotes_a_long_query_briefly() -> None:
    long = "zyxwv " * 4200  # 25 kB with no word the model knows
    queries, warnings = encode_queries(_bundle(), _ZeroTextEngine(), ["zyxwv qwrtp", long, "a man"], {"object": 1, "activity": 1})
    assert queries.shape == (3, 8) and queries.dtype == np.float32
    assert len(warnings) == 2
    assert "no word of 'zyxwv qwrtp' is in the model's vocabulary" in warnings[0]
    assert len(warnings[1]) < 200 and "(25200 characters)" in warnings[1]


def test_quote_keeps_start_and_end_within_the_limit() -> None:
    assert quote("a short query") == "'a short query'"
    text = "start " + "x" * 1000 + " end"
    shown = quote(text, limit=40)
    assert shown.startswith("'start ") and " end' (1010 characters)" in shown
    assert len(shown) <= 40 + len(" … ") + len("'' (1010 characters)")


def test_settings_errors_name_the_argument_not_a_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = SimpleNamespace(config=SimpleNamespace(spaces=[SimpleNamespace(name="object", weight=1.0)]))
    with pytest.raises(SettingError, match=r"space_weights \| unknown space 'audio' \| expected names from \['object'\]") as err:
        parse_space_weights("audio=1", bundle)  # type: ignore[arg-type]
    assert err.value.setting == "space_weights"
    with pytest.raises(SettingError, match=r"'object=-1' \| expected name=number with number >= 0"):
        parse_space_weights("object=-1", bundle)  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)  # no demo bundle here
    monkeypatch.delenv("JEMC_MODEL", raising=False)
    with pytest.raises(SettingError, match=r"model \| none found \(the given model .*nowhere; the demo bundle demo/models/jemc\)") as err:
        resolve_model(tmp_path / "nowhere")
    assert err.value.setting == "model" and "--" not in str(err.value)
