"""The training loss picture: one curve per term of the loss, none drawn twice."""

from __future__ import annotations

import json

from diffdeblur.plots import loss_curves, save_loss_curve


def test_a_loss_of_one_term_is_one_curve_named_after_it():
    records = [{"step": s, "loss": 1 / s, "diffusion": 1 / s, "lr": 1e-3} for s in (10, 20, 30)]
    (curve,) = loss_curves(records)
    assert curve == ("diffusion", [10, 20, 30], [0.1, 0.05, 1 / 30])


def test_a_loss_of_several_terms_draws_the_total_and_each_term_once():
    records = [
        {"step": s, "loss": 3.0, "regression": 1.0, "kernel": 1.5, "reblur": 0.5} for s in (10, 20)
    ]
    labels = [label for label, _, _ in loss_curves(records)]
    assert labels == ["total", "regression", "kernel", "reblur"]


def test_an_old_log_with_the_total_only_is_one_curve_and_a_png(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in (1, 2, 3)))
    assert loss_curves([]) == []
    (curve,) = loss_curves([json.loads(line) for line in log.read_text().splitlines()])
    assert curve[0] == "loss"
    save_loss_curve(log, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")
