"""experiments/scripts/bench_cadence.py: every way of timing the step gives a time, on a tiny model."""

from smallest_loss.experiments.scripts.bench_cadence import main


def test_the_cadence_bench_prints_a_row_of_positive_times(capsys):
    main(["32,1,2,16,2", "--steps", "4", "--rounds", "1", "--sync-every", "2"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "32,1,2,16,2" and len(cells) == 7 and all(float(c) > 0 for c in cells[1:6])
    assert all(float(r) > 0 for r in cells[6].split(","))  # train's step over each of the four ways
