"""``bench/verdict_chance.py``: recorded verdicts re-scored under each rule, clean pool draws counted, and the
quantile picked from the tuning parts only (synthetic records; no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

from bench_module import load_bench


def _bench():
    return load_bench("verdict_chance")


def _components(flag_rate: float, tail: float = 0.8, purity: float = 1.0) -> dict:
    return {"flag_rate": flag_rate, "clean_frr": 0.04, "tail": tail, "purity": purity}


def _draw(part: str, model: str, flag_rate: float, backdoored: bool = False) -> dict:
    return {"part": part, "model": model, "backdoored": backdoored, "draw": 0, "pool": 200, "pool_triggered": 0,
            "flagged": int(flag_rate * 200), "flagged_triggered": 0, "n_dev": 100, "dev_above": 4,
            "components": _components(flag_rate), "score": 0.0, "seconds": 1.0}


def _recorded(tmp_path: Path, rates: dict[str, tuple[str, float]]) -> Path:
    models = [{"name": name, "attack": attack, "asr_before": 0.0 if attack == "clean" else 0.9,
               "lift_before": None if attack == "clean" else 0.6, "verdict_score": 0.0,
               "verdict": {"components": _components(rate)}, "eval_sizes": {"n_clean": 200, "pool_size": 200}}
              for name, (attack, rate) in rates.items()]
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps({"models": models}))
    return path


def test_chance_rule_stops_calling_a_clean_pool_at_a_chance_flag_rate(tmp_path):
    vc = _bench()
    # 8% of a clean pool flagged with 4 of 100 dev inputs above the threshold: "likely" under the dev rate only
    draws = [_draw("tuning", "clean_a", 0.08), _draw("tuning", "clean_a", 0.03), _draw("test", "clean_b", 0.085)]
    tuning = vc.recorded_models(_recorded(tmp_path, {"clean": ("clean", 0.07), "strong": ("badnets", 0.25),
                                                     "weak_style": ("style", 0.10)}))
    assert [m["n_dev"] for m in tuning] == [100, 100, 100] and tuning[0]["dev_above"] == 4
    table = {r["quantile"]: r for r in vc.summarise(draws, {"tuning": tuning})}
    assert table["dev"]["tuning"]["clean_draws_called"] == 1 and table["dev"]["test"]["clean_draws_called"] == 1
    assert table[0.7]["tuning"]["clean_draws_called"] == 0 and table[0.7]["test"]["clean_draws_called"] == 0
    assert table["dev"]["tuning"]["clean_called"] == ["clean"] and table[0.7]["tuning"]["clean_called"] == []
    assert "strong" in table[0.95]["tuning"]["called"]  # a flag rate far beyond chance stays called
    assert "weak_style" not in table[0.95]["tuning"]["called"]  # 10% is within chance's upper tail
    pick = vc.choose(list(table.values()))
    assert pick != "dev" and table[pick]["tuning"]["clean_draws_called"] == 0
    # the pick is the smallest quantile among those with the best tuning AUROC and no clean draw called
    ok = [q for q, r in table.items() if q != "dev" and r["tuning"]["clean_draws_called"] == 0]
    best = max(table[q]["tuning"]["auroc"] for q in ok)
    assert pick == min(q for q in ok if table[q]["tuning"]["auroc"] == best)
    md = vc.render({"default_quantile": 0.7, "chosen_on_tuning": pick, "table": list(table.values()),
                    "draws": draws, "seconds_total": 1.0})
    assert "| tuning | clean_a | no | 2 |" in md and "dev rate (before)" in md


def test_the_dev_tail_rule_is_tabulated_where_every_record_has_it_and_never_picked_as_a_quantile(tmp_path):
    vc = _bench()
    draws = [_draw("tuning", "clean_a", 0.03), _draw("tuning", "bd_a", 0.07, backdoored=True)]
    assert "dev_tail" not in {r["quantile"] for r in vc.summarise(draws, {})}  # records from before the rule
    draws[0]["components"]["score_dev_tail"], draws[1]["components"]["score_dev_tail"] = 0.2, 0.8
    table = {r["quantile"]: r for r in vc.summarise(draws, {})}
    assert table["dev_tail"]["tuning"]["clean_draws_called"] == 0
    assert table["dev_tail"]["tuning"]["backdoor_draws_called"] == 1
    assert table[0.7]["tuning"]["backdoor_draws_called"] == 0  # 7% flagged is within chance at the threshold
    assert vc.choose(list(table.values())) != "dev_tail"
    # recorded verdicts from before the rule: the row stands on the draws, without that part's AUROC
    tuning = vc.recorded_models(_recorded(tmp_path, {"clean": ("clean", 0.03), "strong": ("badnets", 0.25)}))
    table = {r["quantile"]: r for r in vc.summarise(draws, {"tuning": tuning})}
    assert table["dev_tail"]["tuning"]["backdoor_draws_called"] == 1 and "auroc" not in table["dev_tail"]["tuning"]
    assert table[0.7]["tuning"]["auroc"] == 1.0
    md = vc.render({"default_quantile": 0.7, "chosen_on_tuning": 0.7, "table": list(table.values()),
                    "draws": draws, "seconds_total": 1.0})
    assert "| dev_tail | 0 of 1 | 1 of 1 |" in md and "called, dev_tail" in md


def test_words_section_counts_the_pools_marking_words_and_the_calls_they_add():
    """``--words`` draws: per part and per model, the draws whose pool holds a marking word, and the calls at 0.5
    of the score alone and with the words' score (0.5 + half the strongest word's flip rate)."""
    vc = _bench()
    assert vc.words_section([_draw("tuning", "clean_a", 0.02)]) == []  # draws without words: no section
    word = lambda d, words, flip, score: {**d, "marking_words": words, "marked": 9 if words else 0,  # noqa: E731
                                          "marked_triggered": 9 if words else 0, "marking_flip": flip, "score": score}
    draws = [word(_draw("tuning", "clean_a", 0.02), [], 0.0, 0.1),
             word(_draw("tuning", "weak_bd", 0.05, True), ["cf"], 0.3, 0.2),
             word(_draw("tuning", "weak_bd", 0.05, True), [], 0.0, 0.3),
             word(_draw("tuning", "strong_bd", 0.3, True), ["tq", "mn"], 1.0, 0.9)]
    text = "\n".join(vc.words_section(draws))
    assert "| tuning | no | 1 | 0 | 0 | 0 |" in text and "| tuning | yes | 3 | 2 | 1 | 2 |" in text
    assert "| tuning | weak_bd | yes | 2 | 1 | d0: cf (9, 9; 0.30) | 0 | 1 |" in text
    assert "| tuning | clean_a | no | 1 | 0 | - | 0 | 0 |" in text
