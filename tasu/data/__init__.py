"""Data: WebDataset shards and the streaming loader.

    config.py       DataConfig / SourceConfig (the `data:` section)
    shard.py        `tasu shard` (shard_main, write_shards); format in data_shards/FORMAT.md
    manifests.py    ps-slm / LLaSO / text inputs -> records or reported bad records
    tar_io.py       tar members with per-sample offsets; shard_index.py: index.json and source resolution
    audio_io.py     audio files, Kaldi ark objects (kaldi_ark.py), FLAC, resampling; features.py: log-mel, fbank
    stages.py       pure sample -> sample stages and the per-mode stage plan; expansion.py: LLM length of the
                    expanded speech (the length guard)
    sources.py      sample-exact split of each epoch across ranks and workers, shuffle buffer
    batching.py     length buckets under frame / token budgets, weighted mixing
    pipeline.py     one worker's deterministic batch stream; loader.py: TrainStream, eval_batches
    faults.py       skip counting, logging and the max skip ratio; collate.py: samples -> SpeechBatch
Only the config is imported here, so `tasu.data.config` stays cheap for the config loader.
"""

from tasu.data.config import DataConfig, SourceConfig

__all__ = ["DataConfig", "SourceConfig"]
