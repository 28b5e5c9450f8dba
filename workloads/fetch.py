"""`python -m harness.workloads fetch NAME...`: download public traces into the traces folder.

The folder is `HARNESS_TRACES`, else `$XDG_CACHE_HOME/sched-harness/traces` (default
`~/.cache/sched-harness/traces`); the trace presets read their files there. Each download is
checked against the size and sha256 recorded here, then renamed into place.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class FetchError(Exception):
    """A trace that cannot be fetched (unknown name, download failure, different file)."""


@dataclass(frozen=True)
class TraceSource:
    name: str  # `fetch NAME`; presets have the same name where there is one
    file: str  # the file name in the traces folder (what the presets read)
    url: str  # where its publisher serves it
    size: int | None = None  # bytes; None: not recorded (the download is kept unverified)
    sha256: str | None = None
    license: str = ""
    about: str = ""


_GITHUB = "https://raw.githubusercontent.com"
_AZURE = f"{_GITHUB}/Azure/AzurePublicDataset/790921015d50dd6aae7f7e47f39ba0e235ad6b08/data"
_AZURE_BLOB = "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace"
_MOONCAKE = (
    f"{_GITHUB}/kvcache-ai/Mooncake/3b5a594133958449a1feaf1c9e0fc1b553e34a28/FAST25-release/traces"
)
_SARATHI = f"{_GITHUB}/microsoft/sarathi-serve/72339db5b120614033b317880ad3a05a5e4c9415"
_VIDUR = f"{_GITHUB}/microsoft/vidur/7d47513363ec447a741ac5e47241580b47724fbf"

# Sizes and hashes are those of the published files (checked equal, byte for byte, to the copies
# the project's tests read). The week-long Azure 2024 traces, Mooncake's tool-agent trace and
# BurstGPT were not available to check: their downloads are kept with the hash printed, unverified.
SOURCES: tuple[TraceSource, ...] = (
    TraceSource(
        "azure_code", "AzureLLMInferenceTrace_code.csv", f"{_AZURE}/AzureLLMInferenceTrace_code.csv",
        320117, "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
        "CC-BY-4.0", "Azure LLM inference 2023 (Splitwise), code: 1 hour, 8,819 requests",
    ),
    TraceSource(
        "azure_conv", "AzureLLMInferenceTrace_conv.csv", f"{_AZURE}/AzureLLMInferenceTrace_conv.csv",
        719188, "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
        "CC-BY-4.0", "Azure LLM inference 2023 (Splitwise), conversation: 1 hour, 19,366 requests",
    ),
    TraceSource(
        "azure_code_1week", "AzureLLMInferenceTrace_code_1week.csv",
        f"{_AZURE_BLOB}/AzureLLMInferenceTrace_code_1week.csv", license="CC-BY-4.0",
        about="Azure LLM inference 2024 (DynamoLLM), code: one week, millions of requests",
    ),
    TraceSource(
        "azure_conv_1week", "AzureLLMInferenceTrace_conv_1week.csv",
        f"{_AZURE_BLOB}/AzureLLMInferenceTrace_conv_1week.csv", license="CC-BY-4.0",
        about="Azure LLM inference 2024 (DynamoLLM), conversation: one week, millions of requests",
    ),
    TraceSource(
        "mooncake_conversation", "mooncake_conversation_trace.jsonl",
        f"{_MOONCAKE}/conversation_trace.jsonl", 3029533,
        "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
        "Apache-2.0", "Mooncake (FAST'25) conversation: 1 hour, 12,031 requests, prefix hashes",
    ),
    TraceSource(
        "mooncake_synthetic", "mooncake_synthetic_trace.jsonl",
        f"{_MOONCAKE}/synthetic_trace.jsonl", 1136313,
        "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
        "Apache-2.0", "Mooncake (FAST'25) synthetic: 3,993 requests, prefix hashes",
    ),
    TraceSource(
        "mooncake_toolagent", "mooncake_toolagent_trace.jsonl",
        f"{_MOONCAKE}/toolagent_trace.jsonl", license="Apache-2.0",
        about="Mooncake (FAST'25) tool and agent: prefix hashes",
    ),
    TraceSource(
        "burstgpt", "BurstGPT_1.csv",
        "https://github.com/HPMLL/BurstGPT/releases/download/v1.2/BurstGPT_1.csv",
        license="CC-BY-4.0", about="BurstGPT (Azure OpenAI GPT service): first 2 months, ~1.4M rows",
    ),
    TraceSource(
        "sharegpt", "sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        f"{_SARATHI}/data/processed_traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
        949600, "6d6c296302a853e2669a674a96f269283e60c57e60363bd450588a1066919f9f",
        "Apache-2.0", "ShareGPT prompt/output lengths (Sarathi-Serve, Llama-2 tokenizer), no times",
    ),
    TraceSource(
        "arxiv_summarization", "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        f"{_VIDUR}/data/processed_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        884932, "9d3580538d915ca75e4aaaa54590b42dbb17abc6d74c8913310cf07c232adcdc",
        "MIT", "arXiv summarization lengths (Vidur, Llama-2 tokenizer): long prompts, no times",
    ),
)  # fmt: skip
_CHUNK = 1 << 20


def traces_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where traces are fetched to and read from."""
    if environ.get("HARNESS_TRACES"):
        return Path(environ["HARNESS_TRACES"]).expanduser()
    cache = environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "sched-harness" / "traces"


def trace_file(name: str) -> str:
    """`${traces:FILE}` in a preset: FILE in the traces folder."""
    return str(traces_dir() / name)


def source_for_file(file_name: str) -> TraceSource | None:
    return next((s for s in SOURCES if s.file == file_name), None)


def fetch_command(source: TraceSource) -> str:
    return f"python -m harness.workloads fetch {source.name}"


def find_source(name: str) -> TraceSource:
    for s in SOURCES:
        if s.name == name:
            return s
    names = [s.name for s in SOURCES]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise FetchError(f"no trace named {name!r}; {hint}known: {', '.join(names)}")


def fetch_trace(
    source: TraceSource, folder: Path, mirror: str | None = None, force: bool = False
) -> tuple[Path, bool]:
    """Download `source` (from `mirror`/<file> if given) into `folder`; (path, verified).

    A file already there is kept if it matches the recorded size and hash (or none is recorded;
    `force` downloads it again). A download that does not match them raises FetchError and
    leaves nothing behind.
    """
    path = folder / source.file
    if path.is_file() and not force:
        if source.sha256 is None:
            return path, False
        if _matches(path, source) is None:
            return path, True
    folder.mkdir(parents=True, exist_ok=True)
    url = f"{mirror.rstrip('/')}/{source.file}" if mirror else source.url
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{source.file}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        mismatch = _matches(Path(tmp), source)
        if mismatch:
            raise FetchError(f"{url}: {mismatch}; not kept (a changed or broken download)")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        raise FetchError(f"{url}: {exc}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path, source.sha256 is not None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: Path, source: TraceSource) -> str | None:
    """None when `path` has the recorded size and sha256 (or none is recorded), else why not."""
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        return f"size {size} bytes, expected {source.size}"
    if source.sha256 is not None:
        digest = sha256_of(path)
        if digest != source.sha256:
            return f"sha256 {digest}, expected {source.sha256}"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.workloads fetch",
        description=__doc__.split("\n\n")[0] + " Without a NAME: the list of traces.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="traces to fetch, or `all`")
    parser.add_argument(
        "--mirror", help="fetch <MIRROR>/<file> instead (an URL or file:// folder); still checked"
    )
    parser.add_argument("--force", action="store_true", help="download again even if present")
    args = parser.parse_args(argv)
    folder = traces_dir()
    if not args.names:
        print(f"traces folder: {folder} (HARNESS_TRACES)")
        for s in SOURCES:
            have = "present" if (folder / s.file).is_file() else "absent"
            print(f"  {s.name:22} {have:8} {s.file}  [{s.license}] {s.about}")
        return 0
    try:
        names = [s.name for s in SOURCES] if args.names == ["all"] else args.names
        for source in [find_source(n) for n in names]:
            path, verified = fetch_trace(source, folder, args.mirror, args.force)
            check = "verified" if verified else "not verified: no published hash is recorded"
            print(f"{path}: {path.stat().st_size} bytes, sha256 {sha256_of(path)} ({check})")
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
