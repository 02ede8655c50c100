"""Datasets and the LightningDataModule: manifest -> (waveform, token ids) batches bucketed by duration."""

from __future__ import annotations

import random

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from anemone_speech.audio import read_audio
from anemone_speech.batch import collate
from anemone_speech.features import speed_perturb
from anemone_speech.manifest import BucketBatchSampler, Utterance
from anemone_speech.text import normalize_text
from anemone_speech.tokenizers import BPETokenizer, CharTokenizer


class AudioTextDataset(Dataset):
    """Item i: (waveform (N,), token ids (L,), duration in seconds after perturbation)."""

    def __init__(self, utts: list[Utterance], tokenizer: CharTokenizer | BPETokenizer, sample_rate: int = 16_000,
                 speed_factors: list[float] | None = None, seed: int = 0) -> None:
        self.utts, self.tokenizer, self.sample_rate = utts, tokenizer, sample_rate
        self.speed_factors = speed_factors or []
        self.rng = random.Random(seed)
        self.targets = [torch.tensor(tokenizer.encode(normalize_text(u.text)), dtype=torch.long) for u in utts]

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        wav = read_audio(self.utts[i].audio_filepath, self.sample_rate)
        if self.speed_factors:
            wav = speed_perturb(wav, self.rng.choice(self.speed_factors))
        return wav, self.targets[i]


class SpeechDataModule(pl.LightningDataModule):
    """Train/validation loaders over manifests; training batches are duration-bucketed and sharded per rank."""

    def __init__(self, train: list[Utterance], validation: list[Utterance], tokenizer: CharTokenizer | BPETokenizer,
                 batch_size: int = 16, num_buckets: int = 8, num_workers: int = 0, sample_rate: int = 16_000,
                 speed_factors: list[float] | None = None, seed: int = 0) -> None:
        super().__init__()
        self.train_utts, self.val_utts, self.tokenizer = train, validation, tokenizer
        self.batch_size, self.num_buckets, self.num_workers = batch_size, num_buckets, num_workers
        self.sample_rate, self.speed_factors, self.seed = sample_rate, speed_factors, seed

    def _loader(self, utts: list[Utterance], train: bool) -> DataLoader:
        ds = AudioTextDataset(utts, self.tokenizer, self.sample_rate, self.speed_factors if train else None, self.seed)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        sampler = BucketBatchSampler([u.duration for u in utts], self.batch_size, shuffle=train, seed=self.seed,
                                     num_replicas=world if train else 1, rank=rank if train else 0,
                                     num_buckets=self.num_buckets if train else 1)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_utts, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_utts, train=False)
