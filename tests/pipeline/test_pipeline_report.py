"""The pipeline report: the example figure names its spectrogram channels by what they are; held-out
records are listed so a person can read them."""

from ecgedge.pipeline.report import channel_titles, held_out_records
from ecgedge.device.dsp import SpectrogramConfig
from ecgedge.train.tasks import load_task


def test_channel_titles_are_the_stft_window_lengths_of_the_task():
    # mitdb-rhythm4: (nperseg, nfft) (32, 128), (128, 128), (512, 512) at 128 Hz
    assert channel_titles(load_task("mitdb-rhythm4").spectrogram) == ["0.25 s STFT", "1 s STFT", "4 s STFT"]


def test_channel_titles_follow_the_sampling_rate():
    spec = SpectrogramConfig(fs=256.0, channels=((64, 256), (256, 256)))
    assert channel_titles(spec) == ["0.25 s STFT", "1 s STFT"]


def test_held_out_records_are_named_per_database_or_counted():
    records = [f"cinc2017/A{i:05d}" for i in range(1224)] + ["mitdb/103", "mitdb/115", "vfdb/419"]
    assert held_out_records(records) == ("cinc2017: 1,224 recordings (listed in run/split.json); "
                                         "mitdb/103, mitdb/115; vfdb/419")
    assert held_out_records(["100", "101"]) == "100, 101"


def test_record_table_sums_each_database_and_keeps_the_worst_records():
    from ecgedge.pipeline.report import record_table, skipped_text

    def scores(correct, windows, cls="NSR"):
        return {"classified": windows, "accuracy": correct / windows,
                "recall": {cls: {"correct": correct, "windows": windows}}}

    records = {f"cinc2017/A{i:05d}": scores(i % 5, 4 if i % 5 == 4 else 5) for i in range(40)}
    records["mitdb/203"] = scores(300, 360, "AF")
    lines = record_table(records, ["NSR", "AF"], max_rows=3)
    assert "| cinc2017 | 40 | 41.67 % | 80/192 | - |" in lines  # 8 x (0+1+2+3+4) of 8 x (5+5+5+5+4)
    assert "| mitdb | 1 | 83.33 % | - | 300/360 |" in lines
    rows = [line for line in lines if line.startswith("| cinc2017/") or line.startswith("| mitdb/")]
    assert len(rows) == 3 and all("| 0.00 % |" in row for row in rows)  # the worst three
    assert any("the 3 worst of 41" in line for line in lines)
    assert skipped_text({"vfdb": {"labels": {"(ASYS": 1}, "quality": {}}}) == "vfdb: 1 for labels '(ASYS'"
    assert skipped_text({"mitdb": {"labels": {}, "quality": {}}}) == "none"
