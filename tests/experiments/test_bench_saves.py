"""experiments/scripts/bench_saves.py: a save's seconds from a short run that saves, on a tiny model."""

from smallest_loss.experiments.scripts.bench_saves import main


def test_the_saves_bench_prints_a_row_of_positive_seconds(capsys):
    main(["16,1", "--saves", "2"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "16,1" and int(cells[1].replace(",", "")) > 0 and float(cells[3]) > 0
