"""Host-side file safety for run directories: atomic writes, "stage done" markers, a workdir lock.

Every result file (results.json, eval.json, summary.md, plots, ...) is written with
`atomic_path` / `write_json` / `write_text`: into a temporary sibling `.<name>.tmp-<pid>-<hex>`
(the file's extension kept at the end, so format-by-extension writers still work), fsynced, renamed
over the final name, and the directory fsynced. A reader therefore sees the old file or the new
one, never a torn one. Temporary files of writers that died are removed by
`clean_stale_temporaries`, which every writing binary calls when it takes its workdir lock.

A stage (training, one planning run, ...) is done when its directory holds `done.json`, written
last by `mark_done` with the sha256 of the stage's result files; `done_problem` re-checks them, so
a result file truncated or edited afterwards makes the stage not done (and names the file).

`workdir_lock` makes one process the only writer of a run directory: a lock file
`<workdir>/.wmjax.lock` holds the owner's pid, host, process start time and command. A lock whose
owner is on this host and no longer runs (or whose pid now belongs to another process) is stale
and taken over with a warning; a live owner, or an owner on another host, is refused with an error
naming it.

Host I/O only; nothing here touches JAX arrays.
"""

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import uuid
import warnings
from typing import Any, Iterator, Mapping, Sequence

LOCK_FILE = '.wmjax.lock'
DONE_FILE = 'done.json'
# `.<name>.tmp-<pid>-<hex>[.<ext>]` (writers) and `.<name>.old-<pid>-<hex>` (retired data).
_TMP_RE = re.compile(r'^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)-(?P<hex>[0-9a-f]{8,32})'
                     r'(?P<ext>\.[A-Za-z0-9]{1,8})?$')


class InputError(Exception):
  """A mistake in what a run was given, for its user to fix: an input that is missing, damaged,
  locked or made for another config, or a config a stage's check refuses. The message says what
  and what to do; the binaries print it without a traceback. Each subclass is also the builtin
  error it refines."""


class MissingInputError(InputError, FileNotFoundError):
  """A dataset, checkpoint or result a stage needs is not there (the message names the command
  that makes it)."""


class MismatchError(InputError, ValueError):
  """An input made for something else: a checkpoint or dataset of another task, model, dataset
  or training settings than this config's (the message names every difference)."""


class CorruptFileError(InputError, ValueError):
  """A file exists but cannot be parsed (truncated, edited, bit-flipped)."""


class WorkdirLockedError(InputError, RuntimeError):
  """Another live process holds the workdir lock."""


# ------------------------------------------------------------------------------------ basics
def fsync_dir(path: str) -> None:
  """Flushes a directory entry (a rename inside it) to disk."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def sha256_file(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def _start_time(pid: int) -> int | None:
  """The process's start time in clock ticks since boot (Linux), None where unknown."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      stat = f.read()
  except OSError:
    return None
  # Field 22; the command name (field 2) may hold spaces, so count from its closing bracket.
  try:
    return int(stat[stat.rindex(')') + 2:].split()[19])
  except (ValueError, IndexError):
    return None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
  """Whether process `pid` runs on this host (and, if `start_time` is given and readable, is
  the same process that had that start time rather than a later one given the same pid)."""
  if pid <= 0:
    return False
  if pid != os.getpid():
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      pass  # Alive, owned by another user.
  if start_time is not None:
    now = _start_time(pid)
    if now is not None and now != start_time:
      return False
  return True


def temporary_path(path: str, kind: str = 'tmp', keep_extension: bool = False) -> str:
  """A unique sibling name `.<name>.<kind>-<pid>-<hex>` of `path` (+ `path`'s extension)."""
  parent, name = os.path.split(os.path.abspath(path))
  ext = os.path.splitext(name)[1] if keep_extension else ''
  return os.path.join(parent, f'.{name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:16]}{ext}')


def is_temporary(path: str) -> bool:
  """True if `path` names a writer's temporary (or retired) file or directory."""
  return _TMP_RE.match(os.path.basename(os.path.normpath(path))) is not None


def temporary_owner(path: str) -> tuple[str, int] | None:
  """(final name, writer pid) of a temporary name, or None for any other name."""
  m = _TMP_RE.match(os.path.basename(os.path.normpath(path)))
  return None if m is None else (m.group('name'), int(m.group('pid')))


def clean_stale_temporaries(directory: str, recursive: bool = True,
                            name: str | None = None) -> list[str]:
  """Removes temporary files and directories (see `temporary_path`) left by dead writers.

  Args:
    directory: where to look.
    recursive: also look in subdirectories (not inside the temporaries themselves).
    name: only temporaries of this final name (e.g. 'dataset').

  Returns:
    The removed paths.
  """
  removed = []
  if not os.path.isdir(directory):
    return removed
  for root, dirs, files in os.walk(directory):
    for entry in list(dirs) + files:
      owner = temporary_owner(entry)
      if owner is None or (name is not None and owner[0] != name) or pid_alive(owner[1]):
        continue
      full = os.path.join(root, entry)
      if os.path.isdir(full) and not os.path.islink(full):
        shutil.rmtree(full, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(full)
      removed.append(full)
    dirs[:] = [d for d in dirs if temporary_owner(d) is None]
    if not recursive:
      break
  return removed


# ------------------------------------------------------------------------------------ writes
@contextlib.contextmanager
def atomic_path(path: str, keep_extension: bool = True) -> Iterator[str]:
  """Yields a temporary path to write `path`'s new content to; renames it over `path` when the
  block ends without an exception (after fsyncing file and directory), removes it otherwise.

    with atomic_path('out/plot.png') as tmp:
      fig.savefig(tmp)
  """
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = temporary_path(path, keep_extension=keep_extension)
  try:
    yield tmp
    if not os.path.exists(tmp):
      raise FileNotFoundError(f'Nothing was written to the temporary file of {path}.')
    with open(tmp, 'rb') as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(parent)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_path(path) as tmp, open(tmp, 'wb') as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  write_bytes(path, text.encode('utf-8'))


def write_json(path: str, obj: Any, indent: int | None = 1) -> None:
  """Writes `obj` as JSON to `path` atomically (as `json.dump` does: NaN written as NaN)."""
  write_text(path, json.dumps(obj, indent=indent) + '\n')


def read_json(path: str) -> Any:
  """Parses a JSON file.

  Raises:
    FileNotFoundError: no file at `path`.
    CorruptFileError: the file is empty, truncated or not JSON; the message names the file.
  """
  try:
    with open(path, 'rb') as f:
      raw = f.read()
  except IsADirectoryError as e:
    raise CorruptFileError(f'{path} is a directory, expected a JSON file.') from e
  try:
    return json.loads(raw.decode('utf-8'))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise CorruptFileError(
        f'{path} is corrupt or truncated ({len(raw)} bytes, not valid JSON: {e}).') from e


def to_json_safe(x: Any) -> Any:
  """`x` with non-finite floats replaced by None (JSON has no NaN or infinity)."""
  if isinstance(x, float):
    return x if x == x and abs(x) != float('inf') else None
  if isinstance(x, Mapping):
    return {k: to_json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json_safe(v) for v in x]
  return x


# ------------------------------------------------------------------------------------ stages
def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def mark_done(directory: str, files: Sequence[str] = (), **info: Any) -> str:
  """Writes `<directory>/done.json` (atomically, last): the sha256 of each of `files` (paths
  relative to `directory`) and `info`. Returns its path."""
  digests = {f: sha256_file(os.path.join(directory, f)) for f in files}
  path = os.path.join(directory, DONE_FILE)
  write_json(path, {'files': digests, 'finished': _now(), **to_json_safe(dict(info))})
  return path


def clear_done(directory: str) -> None:
  """Removes the stage-done marker (call before a stage rewrites its outputs)."""
  with contextlib.suppress(FileNotFoundError):
    os.remove(os.path.join(directory, DONE_FILE))


def done_problem(directory: str) -> str | None:
  """None if the stage in `directory` finished and its result files are as it left them; else
  why not (no marker, a corrupt marker, a result file missing or changed since)."""
  path = os.path.join(directory, DONE_FILE)
  if not os.path.isfile(path):
    return f'{path} does not exist'
  try:
    record = read_json(path)
  except CorruptFileError as e:
    return str(e)
  files = record.get('files') if isinstance(record, dict) else None
  if not isinstance(files, dict):
    return f'{path} has no "files" record'
  for name, digest in sorted(files.items()):
    full = os.path.join(directory, name)
    if not os.path.isfile(full):
      return f'{full} is missing'
    if sha256_file(full) != digest:
      return (f'{full} was changed or corrupted after its stage finished (its sha256 differs '
              f'from the one recorded in {path})')
  return None


def is_done(directory: str) -> bool:
  return done_problem(directory) is None


# ------------------------------------------------------------------------------------ lock
def _owner_record(command: str) -> dict[str, Any]:
  pid = os.getpid()
  return {'pid': pid, 'host': socket.gethostname(), 'start_time': _start_time(pid),
          'command': command, 'argv': list(sys.argv), 'created': _now()}


def read_lock(workdir: str) -> dict[str, Any] | None:
  """The lock record of `workdir` (None if unlocked).

  Raises:
    CorruptFileError: the lock file is not a lock record.
  """
  path = os.path.join(workdir, LOCK_FILE)
  try:
    record = read_json(path)
  except FileNotFoundError:
    return None
  if not isinstance(record, dict) or not isinstance(record.get('pid'), int):
    raise CorruptFileError(f'{path} is not a wmjax lock record.')
  return record


def _is_ours(record: Mapping[str, Any]) -> bool:
  return (record.get('pid') == os.getpid() and record.get('host') == socket.gethostname()
          and record.get('start_time') == _start_time(os.getpid()))


def _describe(record: Mapping[str, Any]) -> str:
  return (f'pid {record.get("pid")} on host {record.get("host")!r} '
          f'({record.get("command")}, since {record.get("created")})')


def _create_exclusive(path: str, record: Mapping[str, Any]) -> bool:
  """Creates `path` holding `record` unless it exists; never leaves a partial lock file."""
  tmp = temporary_path(path)
  with open(tmp, 'w') as f:
    json.dump(record, f)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(tmp, path)  # Atomic, fails if `path` exists.
    return True
  except FileExistsError:
    return False
  except OSError as e:  # Filesystems without hard links.
    if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
      raise
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      json.dump(record, f)
      f.flush()
      os.fsync(f.fileno())
    return True
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


def _take_over_stale(path: str, stale: Mapping[str, Any]) -> None:
  """Moves a stale lock aside; puts it back if another process replaced it meanwhile."""
  aside = temporary_path(path, kind='old')
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return  # Another process removed it first.
  try:
    moved = read_json(aside)
  except (CorruptFileError, FileNotFoundError):
    moved = None
  if moved is not None and moved != dict(stale):  # A fresh lock: restore it.
    with contextlib.suppress(FileExistsError):
      os.link(aside, path)
  with contextlib.suppress(FileNotFoundError):
    os.remove(aside)


def _stale(record: Mapping[str, Any]) -> bool:
  return (record.get('host') == socket.gethostname()
          and not pid_alive(int(record['pid']), record.get('start_time')))


@contextlib.contextmanager
def workdir_lock(workdir: str, command: str, *, enabled: bool = True,
                 clean_temporaries: bool = True) -> Iterator[dict[str, Any] | None]:
  """Holds `<workdir>/.wmjax.lock` for the block: this process is the workdir's only writer.

  Re-entrant within a process (a nested lock of the same workdir is a no-op). On entry, stale
  temporary files of dead writers anywhere under `workdir` are removed.

  Args:
    workdir: the run directory (created).
    command: what holds the lock (shown to a process that finds it taken).
    enabled: False makes this a no-op (e.g. on the non-primary processes of a multi-process
      job: process 0 holds the lock for the job).
    clean_temporaries: remove dead writers' temporary files under `workdir`.

  Yields:
    The lock record, or None when disabled.

  Raises:
    WorkdirLockedError: a live process (or one on another host, whose liveness cannot be
      checked from here) holds the lock; the message names it and the lock file.
  """
  if not enabled:
    yield None
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
  mine = _owner_record(command)
  nested = False
  for _ in range(5):
    if _create_exclusive(path, mine):
      break
    try:
      owner = read_lock(workdir)
    except CorruptFileError as e:
      raise WorkdirLockedError(
          f'{e} Another run may be starting in {workdir}; if none is, delete {path}.') from e
    if owner is None:
      continue  # Released meanwhile.
    if _is_ours(owner):
      nested = True
      break
    if _stale(owner):
      warnings.warn(f'{path}: taking over a stale lock of {_describe(owner)}, which no longer '
                    'runs.', stacklevel=3)
      _take_over_stale(path, owner)
      continue
    where = ('it still runs' if owner.get('host') == socket.gethostname() else
             'it runs on another host, so whether it still runs cannot be checked from here')
    raise WorkdirLockedError(
        f'{workdir} is in use by {_describe(owner)}: {where}. One workdir has one writer: wait '
        f'for it, use another --workdir, or, if that process is certainly gone, delete {path}.')
  else:
    raise WorkdirLockedError(f'Could not take the lock {path}: it changed hands repeatedly.')
  try:
    if clean_temporaries and not nested:
      clean_stale_temporaries(workdir)
    yield mine
  finally:
    if not nested:
      with contextlib.suppress(CorruptFileError, FileNotFoundError):
        if read_lock(workdir) == mine:
          os.remove(path)
