import json

from bagel_mini.bench import main


def test_step_benchmark_runs_and_ends_with_its_json_line(capsys):
    main(["step", "--repeats", "1", "--samples", "4"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last_line)
    assert set(result) == {"mot_over_dense", "moe_over_dense", "packed_over_padded", "tokens_per_s"}
    assert all(value > 0 for value in result.values())


def test_sample_benchmark_runs_and_ends_with_its_json_line(capsys):
    main(["sample", "--steps", "2", "--context", "20"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"cached_speedup", "s_per_step"} and all(value > 0 for value in result.values())
