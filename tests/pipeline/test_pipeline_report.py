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
