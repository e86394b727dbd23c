"""The run wall-clock model: its terms sum to the total, the steps it leaves fit the budget, and it fits known
coefficients back from synthetic probe runs."""

import numpy as np
import pytest
from smallest_loss.timing import probes as probes_module
from smallest_loss.timing.probes import fit_wall_clock, pick_probes, probe_runs
from smallest_loss.timing.wallclock import TERMS, Cadence, WallClock, fit_nonnegative

CLOCK = WallClock(
    host=(0.002, 1e-7),
    compile=(1.0, 0.5, 2.0),
    forward_fraction=0.35,
    save=(0.05, 0.4),
    startup=(0.3, 0.01),
    loop_held_out=dict(mape=0.05, max_ape=0.1, probes=3),
    save_per_layer=0.03,
    eval_batch=0.002,
    eval_first_call=0.015,
)
RUN = dict(b=16, s=64, n=2, params=40_000.0)


@pytest.mark.parametrize(
    "cadence", [Cadence(), Cadence(eval_every=0, eval_points=5, checkpoint_every=0), Cadence(eval_every=7)]
)
def test_terms_sum_to_the_total_and_the_steps_fill_the_budget(cadence):
    seconds, step = np.array([5.0, 20.0, 120.0]), 0.02
    steps = CLOCK.steps_within(seconds, step, **RUN, cadence=cadence)
    assert np.all(steps > 0) and np.all(np.diff(steps) > 0)
    terms = CLOCK.terms(steps, step, **RUN, cadence=cadence)
    np.testing.assert_allclose(terms["total"], sum(terms[k] for k in TERMS))
    assert np.all(terms["total"] <= seconds * 1.01)  # within the budget (the periodic terms are amortised)
    assert np.all(terms["total"] >= seconds - 3 * (step + terms["evals"] / cadence.evals(steps)))  # and fills it
    assert np.all(terms["steps"] == steps * step)


def test_the_corpus_load_is_start_up_and_costs_its_seconds_of_steps():
    step, load = 0.02, 1.5
    plain, loaded = Cadence(), Cadence(load_seconds=load)
    fewer = CLOCK.steps_within(60.0, step, **RUN, cadence=plain) - CLOCK.steps_within(60.0, step, **RUN, cadence=loaded)
    assert load / (2 * step) < fewer <= load / step + 1  # the load's seconds of steps (each with its share of saves)
    terms = CLOCK.terms(1000, step, **RUN, cadence=loaded)
    assert terms["startup"] == pytest.approx(CLOCK.startup_seconds(2) + load) and terms["corpus_load"] == load
    assert terms["total"] == pytest.approx(sum(terms[k] for k in TERMS))
    assert "corpus_load" not in CLOCK.terms(1000, step, **RUN, cadence=plain)


def test_a_budget_below_the_fixed_terms_buys_no_steps():
    assert CLOCK.steps_within(0.5, 0.01, **RUN, cadence=Cadence()) == 0


def test_evaluation_and_save_counts():
    c = Cadence(eval_every=10, eval_points=0, checkpoint_every=25)
    np.testing.assert_array_equal(c.evals([10, 15, 100]), [1, 2, 10])
    np.testing.assert_array_equal(c.saves([10, 25, 26]), [1, 1, 2])
    spaced = Cadence(eval_every=0, eval_points=4, checkpoint_every=0)
    np.testing.assert_array_equal(spaced.evals([100, 3]), [4, 3])
    np.testing.assert_array_equal(spaced.saves([100]), [1])


def test_fit_nonnegative_recovers_coefficients_and_falls_back_to_a_constant():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    X = np.column_stack([np.ones_like(x), x])
    assert fit_nonnegative(X, 0.5 + 0.25 * x) == pytest.approx([0.5, 0.25])
    assert fit_nonnegative(X[:1], [3.0]) == [3.0, 0.0]  # one point cannot separate two terms


def _probe(n, b, s, params):
    """A probe run as timing/probes.py records it, generated from CLOCK with a compiled step of 1 ms per layer."""
    step = 1e-3 * n * b / 16
    tokens = b * (s + 1)
    warm = 8 * (CLOCK.eval_batch + CLOCK.forward_fraction * step / b * 16)  # 8 batches of 16 rows after the first
    return dict(
        config=dict(d=64, n=n, h=4, w=256, s=s, v=256),
        dtype="float32",
        batch=b,
        params=params,
        step_seconds=step,
        loop_seconds=step + CLOCK.host[0] + CLOCK.host[1] * tokens,
        startup=float(CLOCK.startup_seconds(n)),
        compile=2.0 * float(CLOCK.compile_seconds(n, params)),  # a run compiles its evaluation too
        record_compile=float(CLOCK.compile_seconds(n, params)),
        eval_seconds=(3 * warm + CLOCK.eval_first_call) / 3,
        eval_rows=128,
        eval_batches=8,
        eval_first=warm + CLOCK.eval_first_call,
        eval_warm=warm,
        save_seconds=float(CLOCK.save_seconds(params, n)),
        state_saves=[  # the state saved again at its depth and 3 layers deeper (each layer 10,000 parameters more)
            dict(n=k, params=params + 1e4 * (k - n), seconds=float(CLOCK.save_seconds(params + 1e4 * (k - n), k)))
            for k in (n, n + 3)
        ],
    )


def test_fit_wall_clock_recovers_known_terms():
    shapes = [(1, 8, 32, 2e4), (2, 16, 64, 8e4), (4, 32, 128, 3e5), (3, 64, 64, 1.5e5), (2, 8, 128, 6e4)]
    probes = [_probe(*shape) for shape in shapes]
    records = [
        dict(status="ok", config=p["config"], counts=dict(params=p["params"]), compile_seconds=p["record_compile"])
        for p in probes
    ]
    clock = fit_wall_clock(probes, records, [p["step_seconds"] for p in probes])
    assert clock.host == pytest.approx(CLOCK.host, rel=1e-4)
    assert clock.compile == pytest.approx(tuple(2 * c for c in CLOCK.compile), rel=1e-4)
    assert clock.forward_fraction == pytest.approx(CLOCK.forward_fraction, rel=1e-4)
    assert clock.eval_batch == pytest.approx(CLOCK.eval_batch, rel=1e-4)
    assert clock.eval_first_call == pytest.approx(CLOCK.eval_first_call, rel=1e-4)
    assert clock.save == pytest.approx(CLOCK.save, rel=1e-4)
    assert clock.save_per_layer == pytest.approx(CLOCK.save_per_layer, rel=1e-4)
    assert clock.startup == pytest.approx(CLOCK.startup, rel=1e-4)
    assert clock.loop_held_out["mape"] < 1e-6  # exact data: each probe's loop step predicted without it
    assert WallClock.from_dict(clock.to_dict()) == clock


def test_probes_spread_over_the_parameter_counts():
    records = [dict(status="ok", counts=dict(params=p)) for p in (5, 1, 9, 3, 7)] + [dict(status="oom")]
    assert [r["counts"]["params"] for r in pick_probes(records, 3)] == [1, 5, 9]
    assert pick_probes(records, 0) == []


def test_probes_are_kept_one_by_one_and_a_rerun_runs_only_those_missing(tmp_path, monkeypatch):
    """A calibration stopped during its third probe keeps the first two in probes.jsonl; run again, it trains the
    third alone, and once the file holds k probes nothing more."""
    records = [dict(status="ok", config=dict(d=p), dtype="float32", batch=2, counts=dict(params=p)) for p in (1, 2, 3)]
    trained, stop = [], [True]

    def fresh_probe(record):
        if record["counts"]["params"] == 3 and stop and stop.pop():
            raise TimeoutError("stopped during the third")
        trained.append(record["counts"]["params"])
        return dict(config=record["config"], dtype=record["dtype"], batch=record["batch"], params=trained[-1])

    monkeypatch.setattr(probes_module, "fresh_probe", fresh_probe)
    with pytest.raises(TimeoutError):
        probe_runs(tmp_path, records, 3)
    assert [p["params"] for p in probe_runs(tmp_path, records, 0)] == [1, 2]  # kept, none run
    assert [p["params"] for p in probe_runs(tmp_path, records, 3)] == [1, 2, 3]
    assert trained == [1, 2, 3]
    assert [p["params"] for p in probe_runs(tmp_path, records, 3)] == [1, 2, 3] and trained == [1, 2, 3]


def test_a_host_cost_that_predicts_held_out_loops_worse_than_none_is_left_out():
    """Three probes whose loop minus compiled step is the machine's noise (+0.6, -2.6, -7.2 ms: a shared CPU's
    minute-to-minute drift) fit no host cost; a host cost every probe shows is kept."""
    shapes = [(1, 8, 32, 2e4), (2, 16, 64, 8e4), (4, 32, 128, 3e5)]
    records = [dict(status="ok", config=_probe(*s)["config"], counts=dict(params=s[3]), compile_seconds=1.0)
               for s in shapes]  # fmt: skip
    noisy = [dict(_probe(*s), loop_seconds=_probe(*s)["step_seconds"] + d) for s, d in zip(shapes, (6e-4, -2.6e-3,
             -7.2e-3), strict=True)]  # fmt: skip
    clock = fit_wall_clock(noisy, records, [p["step_seconds"] for p in noisy])
    held = clock.loop_held_out
    assert clock.host == (0.0, 0.0) and held["mape_without_host"] < held["mape_with_host"]
    assert held["mape"] == held["mape_without_host"] and "no host cost" in clock.describe()
    steady = [dict(_probe(*s), loop_seconds=_probe(*s)["step_seconds"] + 2e-3) for s in shapes]
    kept = fit_wall_clock(steady, records, [p["step_seconds"] for p in steady])
    assert kept.host[0] == pytest.approx(2e-3) and kept.loop_held_out["mape"] < 1e-9
    assert "host cost 2 ms" in kept.describe()


def test_a_save_is_priced_by_its_layers_where_the_probes_differ_in_depth():
    """Saves whose seconds grow with the layers at equal bytes (the checkpointer's cost per array) are priced per
    layer; probes of one depth cannot tell layers from the constant and fit none; a profile written before the term
    existed reads as none."""
    shapes = [(1, 8, 32, 2e4), (2, 16, 64, 2e4), (4, 32, 128, 2e4)]
    probes = [_probe(*shape) for shape in shapes]
    records = [dict(status="ok", config=p["config"], counts=dict(params=p["params"]), compile_seconds=1.0)
               for p in probes]  # fmt: skip
    clock = fit_wall_clock(probes, records, [p["step_seconds"] for p in probes])
    assert clock.save_per_layer == pytest.approx(0.03, rel=1e-4)
    assert float(clock.save_seconds(2e4, 8)) == pytest.approx(float(CLOCK.save_seconds(2e4, 8)), rel=1e-4)
    assert "0.03 s per layer" in clock.describe()
    flat = [dict(p, config=dict(p["config"], n=2), state_saves=[]) for p in probes]  # one depth, none saved again
    assert fit_wall_clock(flat, records, [p["step_seconds"] for p in flat]).save_per_layer == 0.0
    old = {k: v for k, v in CLOCK.to_dict().items() if k != "save_per_layer"}
    assert WallClock.from_dict(old).save_per_layer == 0.0 and WallClock.from_dict(CLOCK.to_dict()) == CLOCK
    assert CLOCK.scaled(2.0).save_per_layer == pytest.approx(0.06)


def test_probes_without_their_first_evaluation_apart_price_by_the_fraction_alone():
    """Probes kept before the first evaluation was recorded apart (a calibration folder of an older version): the
    median of their evaluations' seconds per sequence over their steps', nothing a batch besides, no first call."""
    probes = [_probe(*shape) for shape in [(1, 8, 32, 2e4), (2, 16, 64, 8e4), (4, 32, 128, 3e5)]]
    for p in probes:
        for key in ("eval_first", "eval_warm", "eval_batches"):
            del p[key]
    forward, per_batch, first_call = probes_module.eval_terms(probes)
    expected = np.median([p["eval_seconds"] / 128 / (p["step_seconds"] / p["batch"]) for p in probes])
    assert forward == pytest.approx(expected) and per_batch == 0 and first_call == 0


def test_an_evaluation_costs_its_batches_and_a_run_on_the_clock_pays_the_first_call_at_compile():
    step, cadence = 0.02, Cadence(eval_batches=16, eval_batch_size=16)
    one = CLOCK.eval_seconds(step, 16, cadence)
    assert one == pytest.approx(16 * (CLOCK.eval_batch + CLOCK.forward_fraction * step))
    assert CLOCK.eval_seconds(step, 16, Cadence(eval_batches=8, eval_batch_size=16)) == pytest.approx(one / 2)
    terms = CLOCK.terms(1000, step + float(CLOCK.host_seconds(16, 64)), **RUN, cadence=cadence)
    first = CLOCK.eval_first_call + 2 * one / 16
    assert terms["compile"] == pytest.approx(CLOCK.compile_seconds(2, RUN["params"]) + first)
    assert terms["evals"] == pytest.approx(cadence.evals(1000) * one)
    # the older profiles' evaluation: the fraction alone
    old = WallClock.from_dict({k: v for k, v in CLOCK.to_dict().items() if k not in ("eval_batch", "eval_first_call")})
    assert old.eval_seconds(step, 16, cadence) == pytest.approx(16 * 16 * CLOCK.forward_fraction * step / 16)


def test_a_save_is_parted_into_layers_and_bytes_by_the_states_saved_at_two_depths():
    """Three probes of the grid's smallest, middle and largest differ in depth and bytes together; with their states
    saved again three layers deeper the three save terms come back, and without those (older probes) the layer term
    still comes from three probes of two depths."""
    probes = [_probe(*shape) for shape in [(1, 8, 32, 2e4), (1, 16, 64, 8e4), (3, 32, 128, 3e6)]]
    expected = (*CLOCK.save, CLOCK.save_per_layer)
    assert probes_module.save_terms(probes) == pytest.approx(expected, rel=1e-4)
    for p in probes:
        del p["state_saves"]
    assert probes_module.save_terms(probes) == pytest.approx(expected, rel=1e-4)  # exact data: three points suffice
    assert probes_module.save_terms(probes[:2])[2] == 0  # one depth: no layer term


def test_a_state_save_is_timed_as_a_run_saves_it():
    from smallest_loss.configs.schema import ModelConfig, TrainConfig

    model = ModelConfig(v=64, d=16, n=1, h=2, w=64, s=8)
    seconds = probes_module.state_save_seconds(model, TrainConfig(steps=4, batch_size=2), repeats=2)
    assert np.isfinite(seconds) and seconds > 0  # the median of two real saves (no bound on their time)


def test_a_probe_whose_process_fails_stops_the_calibration_with_a_clear_error(monkeypatch):
    import sys

    from smallest_loss.configs.errors import UserError

    monkeypatch.setattr(sys, "executable", "false")  # a "Python" that exits 1 at once
    record = dict(status="ok", config=dict(d=16), dtype="float32", batch=2, counts=dict(params=1))
    with pytest.raises(UserError, match=r"a probe run's process failed \(exit 1"):
        probes_module.fresh_probe(record)


@pytest.mark.slow
def test_a_probe_runs_in_a_fresh_process_and_measures_every_term():
    """A real probe of a tiny model, trained in a process of its own: each term measured, its evaluations' first
    apart from the later ones, and its state saved again at two depths."""
    config = dict(v=64, d=16, n=1, h=2, w=64, s=8)
    record = dict(status="ok", config=config, dtype="float32", batch=2, step_seconds=1e-3, counts=dict(params=1))
    probe = probes_module.fresh_probe(record)
    assert probe["config"] == config and probe["loop_seconds"] > 0 and probe["bare_seconds"] > 0
    assert probe["startup"] >= probe["startup_init"] > 0 and probe["compile"] > 0 and probe["save_seconds"] > 0
    assert probe["eval_first"] > 0 and probe["eval_warm"] > 0 and probe["eval_batches"] == 8
    assert probe["eval_seconds"] == pytest.approx((probe["eval_first"] + 2 * probe["eval_warm"]) / 3, abs=3e-4)
    assert [s["n"] for s in probe["state_saves"]] == [1, 4] and all(s["seconds"] > 0 for s in probe["state_saves"])
    assert probe["state_saves"][1]["params"] > probe["state_saves"][0]["params"]
