"""The shared part of our TFDS builders: find the files (manual_dir or download), check sha256.

A builder subclasses `CorpusBuilder`, names its corpus (`CORPUS`, a key of
`rnn_jax.data.corpora.SPLIT_FILES`), where each file comes from on the internet (`URLS`),
and writes examples per split. Builders are TensorFlow-free `GeneratorBasedBuilder`s that
write ArrayRecord (read back with `tfds.data_source`, no TensorFlow either) and keep the
published example order (`disable_shuffling`): LM streams depend on it.

Files: a `manual_dir` that is given (the folder that directly holds the extracted files, laid
out as `../shared/data/<name>`) is used, and must hold every file (`builders.prepare` refuses
one that is missing or empty); without one, TFDS's default manual folder
(`<data_dir>/downloads/manual`, shared by every dataset there) is used when it holds all of
them, otherwise `URLS` are downloaded (and decompressed). Either way each
file's sha256 must equal the pinned one (`corpora.SHA256`), or preparation stops with an
error naming the file.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import tensorflow_datasets as tfds

from rnn_jax.data.corpora import SPLIT_FILES, expected_sha256, file_sha256
from rnn_jax.data.data_files import DataNotFoundError


class CorpusBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base class: `_split_generators` resolves and verifies the files, subclasses read them."""

    CORPUS = ""
    # file name -> (url, member inside an archive or None)
    URLS: dict[str, tuple[str, str | None]] = {}
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the extracted files directly in manual_dir, named as in ../shared/data/<name> "
        "(see rnn_jax.data.corpora.SPLIT_FILES); their sha256 is checked."
    )

    def _files(self, dl_manager: tfds.download.DownloadManager) -> dict[str, pathlib.Path]:
        names = sorted({f for files in SPLIT_FILES[self.CORPUS].values() for f in files})
        try:
            manual_dir = pathlib.Path(os.fspath(dl_manager.manual_dir))
        except AssertionError:
            manual_dir = None
        if manual_dir is not None:
            files = {name: manual_dir / name for name in names}
            missing = [os.fspath(p) for p in files.values() if not p.is_file()]
            # TFDS's default manual folder is shared by every dataset of the data_dir: other
            # datasets' files there are no request to read ours from it, so ours are
            # downloaded unless it holds them all. Any other manual_dir must hold them.
            if (
                missing
                and manual_dir == pathlib.Path(os.fspath(dl_manager.download_dir)) / "manual"
            ):
                manual_dir = None
            elif missing:
                raise DataNotFoundError(
                    f"{self.name}: manual_dir {os.fspath(manual_dir)} lacks {missing}; it must "
                    f"directly hold {names}"
                )
        if manual_dir is None:
            files = self._download(dl_manager, names)
        for name, path in files.items():
            want, got = expected_sha256(self.CORPUS, name), file_sha256(path)
            if got != want:
                raise ValueError(
                    f"{self.name}: {os.fspath(path)} has sha256 {got}, expected {want} "
                    f"(the published {name}); re-extract it"
                )
        return files

    def _download(
        self, dl_manager: tfds.download.DownloadManager, names: list[str]
    ) -> dict[str, pathlib.Path]:
        urls = {url for url, _ in (self.URLS[n] for n in names)}
        try:
            fetched = dl_manager.download_and_extract({u: u for u in urls})
        except Exception as e:  # network errors come in many types; say what was tried
            raise RuntimeError(
                f"{self.name}: no manual_dir with the files, and downloading {sorted(urls)} "
                f"failed ({type(e).__name__}: {e}); pass manual_dir=<folder with {names}>"
            ) from e
        files = {}
        for name in names:
            url, member = self.URLS[name]
            path = pathlib.Path(os.fspath(fetched[url]))
            files[name] = path / member if member else path
        return files

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        files = self._files(dl_manager)
        return {
            split: self._generate_examples(split, [files[f] for f in split_files])
            for split, split_files in SPLIT_FILES[self.CORPUS].items()
        }

    def _generate_examples(self, split: str, paths: list[pathlib.Path]) -> Iterator:
        raise NotImplementedError
