"""scripts/plot_log_loss.py: the curves, the convexity check, and the files main() writes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from script_modules import load

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def plot():
    return load("plot_log_loss")


def test_loss_curves(plot):
    curves = plot.loss_curves(n=99)
    p = curves["probs"]
    assert p.dtype == torch.float64 and p.numel() == 99
    assert p.min() > 0 and p.max() < 1
    torch.testing.assert_close(curves["class1"], -torch.log(p), rtol=0, atol=1e-12)
    torch.testing.assert_close(curves["class0"], -torch.log1p(-p), rtol=0, atol=1e-12)
    # Mirror images of each other around p = 0.5, and both blow up at the wrong end.
    torch.testing.assert_close(curves["class0"], curves["class1"].flip(0), rtol=0, atol=1e-12)
    assert curves["class1"][0] > 4 and curves["class0"][-1] > 4


def test_story_data_is_seeded_and_overlapping(plot):
    x, y = plot.story_data()
    x2, y2 = plot.story_data()
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.numel() == 20 and int(y.sum()) == 10
    # Overlap: some customers lie on the other class's side, so log loss has a finite minimum.
    assert 0 < int(((x > 0).double() != y).sum()) < 10


def test_cost_vs_weight_matches_a_direct_computation(plot):
    weights = torch.tensor([-2.0, 0.0, 0.5, 3.0], dtype=torch.float64)
    costs = plot.cost_vs_weight(weights)
    x, y = costs["x"], costs["y"]
    for w, mse, log_loss in zip(weights, costs["mse"], costs["log_loss"], strict=True):
        p = torch.sigmoid(w * x)
        assert mse.item() == pytest.approx(((p - y) ** 2).mean().item(), abs=1e-12)
        direct = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
        assert log_loss.item() == pytest.approx(direct.item(), abs=1e-12)
    # At w = 0 every p is 0.5: MSE 1/4, log loss ln 2.
    assert costs["mse"][1].item() == pytest.approx(0.25)
    assert costs["log_loss"][1].item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_log_loss_is_convex_and_mse_is_not(plot):
    costs = plot.cost_vs_weight()
    assert costs["weights"][0] == -10 and costs["weights"][-1] == 10
    check = plot.convexity_check(costs)
    assert check["log_loss"]["convex"]
    assert check["log_loss"]["min_second_difference"] >= -plot.CONVEX_TOL
    assert check["log_loss"]["negative_count"] == 0
    assert not check["mse"]["convex"]
    assert check["mse"]["min_second_difference"] < -1e-5  # far beyond rounding
    assert check["mse"]["negative_count"] > 0
    # Both have their minimum inside the range, at a positive weight.
    for name in ("mse", "log_loss"):
        i = int(costs[name].argmin())
        assert 0 < i < len(costs["weights"]) - 1 and costs["weights"][i] > 0


def test_second_differences(plot):
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    assert (plot.second_differences(x**2) > 0).all()
    assert (plot.second_differences(-(x**2)) < 0).all()
    assert plot.second_differences(2 * x + 1).abs().max() < 1e-12


def test_main_writes_pngs_and_tensorboard_run(plot, tmp_path, capsys):
    out, logdir = tmp_path / "figures", tmp_path / "run"
    result = plot.main(["--out", str(out), "--logdir", str(logdir)])
    for name in ("log_loss_curves", "mse_vs_log_loss"):
        path = out / f"{name}.png"
        assert result["paths"][name] == path
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in out.iterdir()) == ["log_loss_curves.png",
                                                      "mse_vs_log_loss.png"]  # no temp files
    events = list(logdir.glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert result["convexity"]["log_loss"]["convex"] and not result["convexity"]["mse"]["convex"]
    printed = capsys.readouterr().out
    assert "NOT convex" in printed and "-> convex" in printed

    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.IMAGES: 0}).Reload()
    assert set(acc.Tags()["images"]) == {"story/log_loss_curves", "story/mse_vs_log_loss"}


def test_loss_curves_figure_draws_the_curves(plot):
    curves = plot.loss_curves()
    (ax,) = plot.plot_loss_curves(curves).axes
    assert ax.get_title() == "Log loss: low when right, unbounded when confidently wrong"
    assert ax.get_xlabel() == 'predicted probability of "jacket", p'
    assert ax.get_ylabel() == "log loss of one customer"
    lines = {line.get_label(): line for line in ax.get_lines()}
    for label, key in (("bought a jacket (class 1): -ln p", "class1"),
                       ("bought a cardigan (class 0): -ln(1 - p)", "class0")):
        assert list(lines[label].get_xdata()) == curves["probs"].tolist(), label
        assert list(lines[label].get_ydata()) == curves[key].tolist(), label
    # The two customers of the story, at their loss.
    points = [(float(line.get_xdata()[0]), float(line.get_ydata()[0]))
              for line in ax.get_lines() if line.get_marker() == "o"]
    assert points == [pytest.approx((0.94, -math.log(0.94))), pytest.approx((0.1, -math.log(0.9)))]
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 5)


def test_mse_vs_log_loss_figure_draws_both_costs(plot):
    costs = plot.cost_vs_weight()
    check = plot.convexity_check(costs)
    fig = plot.plot_mse_vs_log_loss(costs, check)
    mse_ax, log_ax = fig.axes
    assert mse_ax.get_title() == "MSE of sigmoid outputs: not convex"
    assert log_ax.get_title() == "Log loss: convex"
    for ax, key in ((mse_ax, "mse"), (log_ax, "log_loss")):
        assert ax.get_xlabel() == "weight w of the model p = sigmoid(w x)"
        assert ax.get_ylabel() == "cost over the data set"
        curve, minimum = ax.get_lines()
        assert list(curve.get_xdata()) == costs["weights"].tolist()
        assert list(curve.get_ydata()) == costs[key].tolist()
        i = int(costs[key].argmin())
        assert minimum.get_xdata()[0] == costs["weights"][i].item()
        assert minimum.get_ydata()[0] == costs[key][i].item()
    # Shaded where a curve bends down: on MSE, where the second differences are negative;
    # on log loss nowhere.
    (shade,) = mse_ax.collections
    assert not log_ax.collections
    concave = plot.second_differences(costs["mse"]) < -plot.CONVEX_TOL
    assert int(concave.sum()) == check["mse"]["negative_count"] > 0
    assert shade.get_label() == "bends down (2nd difference < 0)"
    assert f"MSE {check['mse']['min_second_difference']:.2e}" in fig._suptitle.get_text()


def test_the_story_run_stays_out_of_the_training_runs(plot, tmp_path, monkeypatch, capsys):
    # Under runs/, its story/ images would sort before train/loss in Time Series for
    # `tensorboard --logdir runs`, the README's first command.
    monkeypatch.chdir(tmp_path)
    result = plot.main(["--out", str(tmp_path / "figures")])
    assert result["logdir"] == Path("runs-story") / "log-loss"
    assert list((tmp_path / "runs-story" / "log-loss").glob("events.out.tfevents.*"))
    assert not (tmp_path / "runs").exists()
    assert "see it with: tensorboard --logdir runs-story" in capsys.readouterr().out
