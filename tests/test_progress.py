import time

from medfuse_hf.progress import progress_bar


def test_a_bar_written_to_a_log_prints_a_line_now_and_then_not_one_per_step(capsys):
    """Under pytest standard error is no terminal, as in CI or `nohup`: tqdm's default redraws ten times a second,
    each redraw a line of the log."""
    for _ in progress_bar(range(20), desc="epoch 0"):
        time.sleep(0.05)
    redraws = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.strip()]
    assert 1 <= len(redraws) <= 2 and redraws[-1].startswith("epoch 0: 100%"), redraws
