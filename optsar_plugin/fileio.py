"""Atomic outputs: reserve temporary names beside the finals, publish them all at the end, discard on error.

Every file the engine writes goes through here, so that a failed, cancelled or killed
run never leaves a half-written output and never replaces an input.

One run, several outputs (the usual case)::

    with OutputSet(inputs=[optical, sar], feedback=feedback) as outs:
        tmp = outs.add(output, "output classification", sidecars=(".aux.xml",))
        style = outs.add(qml_path_for(output), "style file", primary=output)
        ...write tmp and style (GDAL may add tmp + ".aux.xml")...
        outs.publish()          # renames every temporary file (and its side-cars) onto its final name

Leaving the ``with`` block without :meth:`OutputSet.publish` (an exception, a
cancellation, SIGTERM turned into :class:`~optsar_plugin.errors.Terminated`) removes
every temporary file and side-car.  :meth:`OutputSet.add` checks, before any work:

* the folder exists and is writable (by creating the temporary file there: the only
  test that sees read-only mounts and quotas), the path is not a folder;
* the output is not the same file as an input (same device and inode when both exist,
  else the same resolved real path: ``//x``, ``a/../x``, symlinked folders and hard
  links are all recognised), nor one of the files GDAL, SQLite or QGIS read together
  with an input (:func:`companions`: ``optical.tif.aux.xml``, ``optical.qml``,
  ``ref.gpkg-wal``, ``ref.dbf`` of ``ref.shp``...), nor the same file as another output
  or as one of its side-cars (``OUTPUT=x.qml`` next to the style file ``x.qml`` of ``x.tif``).

Temporary names are hidden and recognisable:
``.<name>.optsar-<host>-<pid>-<start>-<random>.tmp<suffix>`` (GDAL side-cars append to
it; ``<start>`` is the process's start time, so a recycled process id is not mistaken
for the writer).  A run killed with SIGKILL cannot clean up; the next
:class:`OutputSet` that writes into the same folder removes such leftovers of
processes of this host that no longer run (:func:`sweep_leftovers`).  :func:`terminate_on_sigterm` (installed by the CLI and
the engine worker, never by library code) turns SIGTERM into an exception so that
the ``with`` blocks clean up.

``tempfile.mkstemp`` creates files readable by their owner only (0600); publishing
gives each file the permissions a normally created file gets (0666 minus the umask).
Single files: :func:`atomic_write_text` / :func:`atomic_write_bytes`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import InputError, OptsarError, Terminated

PathLike = Union[str, "os.PathLike[str]"]

_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
# "-<start>" is absent from the names of version 0.1 (pid only); mkstemp's random part has no "-" or ".".
_LEFTOVER = re.compile(r"^\..*\.optsar-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?:(?P<start>\d+)-)?[^.-]*\.tmp")
_MAX_NAME = 120  # bytes of the final name kept in a temporary name (NAME_MAX is 255 bytes)

# Files read together with a dataset: writing one of them changes or corrupts the dataset although its
# own file is untouched.  Appended to the file name: GDAL's PAM side-car, external overviews and masks,
# SQLite's (GeoPackage) write-ahead log and journal.  In place of the extension: QGIS's style, world
# files, the ESRI .aux and .prj, a shapefile's other parts and its spatial indexes.
COMPANION_SUFFIXES = (".aux.xml", ".ovr", ".msk", "-wal", "-shm", "-journal")
COMPANION_EXTENSIONS = (".qml", ".aux", ".tfw", ".tifw", ".wld", ".prj", ".shx", ".dbf", ".cpg", ".qix", ".sbn",
                        ".sbx")


# -- scratch space ----------------------------------------------------------------------------


class SlotFile:
    """Buffers in numbered, equal slots of an unnamed temporary file: scratch space off the heap.

    The file is made on the first :meth:`write` with :func:`tempfile.TemporaryFile` in
    ``folder`` (None: the system's temporary folder); it has no name on Linux and is deleted
    on close elsewhere, so nothing is left behind, even by a killed process.  ``slot_bytes``:
    the size of a slot (None: the first buffer written).  A full disk raises ``OSError``.
    """

    def __init__(self, folder: Optional[str], prefix: str, slot_bytes: Optional[int] = None):
        self.folder, self.prefix, self.slot_bytes = folder, prefix, slot_bytes
        self._file = None

    @property
    def used(self) -> bool:
        return self._file is not None

    def write(self, slot: int, buffer) -> None:
        """Write ``buffer`` (C-contiguous, at most a slot) into ``slot``."""
        data = memoryview(buffer).cast("B")
        if self._file is None:
            self.slot_bytes = self.slot_bytes or data.nbytes
            self._file = tempfile.TemporaryFile(prefix=self.prefix, dir=self.folder)
        if data.nbytes > self.slot_bytes:
            raise ValueError(f"{data.nbytes} bytes do not fit a slot of {self.slot_bytes}")
        self._file.seek(slot * self.slot_bytes)
        self._file.write(data)

    def read_into(self, slot: int, buffer) -> None:
        """Fill ``buffer`` (C-contiguous) from the start of ``slot``."""
        data = memoryview(buffer).cast("B")
        self._file.seek(slot * self.slot_bytes)
        if self._file.readinto(data) != data.nbytes:
            raise OSError(f"the temporary file {self.prefix}* in {self.folder or tempfile.gettempdir()} was cut short")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# -- single files ------------------------------------------------------------------------------


def _umask() -> int:
    """The process umask, read without changing it (Linux), else the common 022."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def temp_path(final: PathLike, create: bool = True) -> str:
    """A unique, recognisable temporary name in ``final``'s folder (created empty unless ``create`` is False).

    The folder is created when missing.
    ``create=False`` is for writers that insist on creating the file themselves (OGR
    drivers): the name is reserved and released again, so it is free but unique.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    short = final.name.encode("utf-8", "surrogateescape")[:_MAX_NAME].decode("utf-8", "ignore")  # NAME_MAX counts bytes
    prefix = f".{short}.optsar-{_HOST}-{os.getpid()}-{_start_time(os.getpid()) or 0}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + final.suffix, dir=str(final.parent))
    os.close(fd)
    if not create:
        os.unlink(tmp)
    return tmp


def publish(tmp: PathLike, final: PathLike) -> None:
    """Give ``tmp`` ordinary permissions and rename it to ``final`` (atomic on one file system)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, final)


def discard(tmp: PathLike) -> None:
    """Remove a temporary file; a missing one is fine."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        publish(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- identity ----------------------------------------------------------------------------------


def plain_path(path: PathLike) -> str:
    """The file part of a path or a QGIS/OGR layer URI (``file.gpkg|layername=x`` -> ``file.gpkg``)."""
    return os.fspath(path).split("|")[0]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same file: same device and inode when both exist, else the same real path."""
    a, b = plain_path(a), plain_path(b)
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare what the names resolve to
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def companions(path: PathLike) -> List[str]:
    """The files GDAL, SQLite (GeoPackage) or QGIS read together with the dataset ``path`` (existing or not).

    Named after the path as given and after its real path (a symlink's target has its own
    side-cars); see :data:`COMPANION_SUFFIXES` and :data:`COMPANION_EXTENSIONS`.
    """
    out = []
    for p in dict.fromkeys((os.path.abspath(plain_path(path)), os.path.realpath(plain_path(path)))):
        stem = os.path.splitext(p)[0]
        out += [p + s for s in COMPANION_SUFFIXES] + [stem + e for e in COMPANION_EXTENSIONS if stem + e != p]
    return out


def refuse_special_file(path: PathLike, role: str) -> None:
    """A path that names a pipe, a socket or a device is an :class:`InputError`: opening a FIFO waits forever,
    a device never ends.  Regular files and folders (some GDAL/OGR datasets are folders) pass; so do missing
    paths and GDAL's virtual paths (the reader says what is wrong with those)."""
    try:
        mode = os.stat(plain_path(path)).st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"The {role} '{plain_path(path)}' is not a regular file (a pipe, socket or device); "
                         "give a file.")


def check_writable(path: PathLike, role: str = "output") -> str:
    """Absolute path of ``path`` after checking that its folder exists and that a file can be created there."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise InputError(f"The {role} '{path}' is a folder; give a file name (e.g. classes.tif).")
    if not os.path.isdir(folder):
        raise InputError(f"The folder of the {role} '{path}' does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"The folder of the {role} '{path}' is not writable.")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise InputError(f"The {role} '{path}' exists and cannot be overwritten.")
    try:  # the definitive test (permissions, read-only mounts, quotas): create and delete a file there
        discard(temp_path(path))
    except OSError as exc:
        raise InputError(f"Cannot write the {role} '{path}': {exc.strerror or exc}.") from None
    return path


# -- leftovers of killed runs ------------------------------------------------------------------


def _proc_stat(pid: int) -> Tuple[str, Optional[int]]:
    """(state letter, start time in clock ticks since boot) of process ``pid`` from Linux's ``/proc``; ("", None)
    where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(b")") + 2:].split()  # the name in (...) may hold spaces
        return fields[0].decode("ascii", "replace"), int(fields[19])  # fields 3 and 22 of proc(5)
    except (OSError, ValueError, IndexError):
        return "", None


def _start_time(pid: int) -> Optional[int]:
    return _proc_stat(pid)[1]


def _running(pid: int, start: Optional[int] = None) -> bool:
    """Whether process ``pid`` runs (a zombie does not) - the one that started at ``start`` when that is known."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        pass
    state, now = _proc_stat(pid)
    if state in ("Z", "X"):  # killed, not yet reaped (a container's init may never reap it)
        return False
    return not (start and now is not None and now != start)  # another start time: the id was recycled


def sweep_leftovers(folder: PathLike, killed: Iterable[int] = ()) -> List[str]:
    """Remove temporary files that runs of this host left in ``folder`` when they were killed.

    Only names of the form written by :func:`temp_path` whose process no longer runs
    are removed (files of running processes, of this process and of other hosts sharing
    the folder are left alone; a zombie or a recycled process id counts as gone).
    ``killed``: process ids the caller has just killed.  Returns the removed paths.
    """
    killed = set(killed)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _LEFTOVER.match(name)
        pid = int(m["pid"]) if m else 0
        if not m or m["host"] != _HOST or pid == os.getpid() or (
                pid not in killed and _running(pid, int(m["start"] or 0))):
            continue
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            discard(path)
            removed.append(path)
    return removed


# -- a run's outputs ---------------------------------------------------------------------------


class _Entry:
    def __init__(self, final: str, temp: str, role: str, sidecars: Sequence[str], notice: bool):
        self.final, self.temp, self.role, self.sidecars, self.notice = final, temp, role, tuple(sidecars), notice

    def claims(self) -> List[str]:
        return [self.final] + [self.final + s for s in self.sidecars]


class OutputSet:
    """The outputs of one run: reserved beside their finals, published together, discarded on error.

    ``inputs``: paths (or layer URIs) no output may replace, each a path, ``(path, role)``
    or ``(path, role, dataset)`` (see :meth:`add_input`); ``feedback``: where a notice goes
    when a side-car file (a style) replaces a file the run did not make.  See the module
    docstring for the checks and the naming of temporary files.
    """

    def __init__(self, inputs: Iterable = (), feedback=None):
        self.inputs: List[tuple] = []
        for item in inputs:  # empty paths are skipped
            self.add_input(*(item if isinstance(item, tuple) else (item,)))
        self.feedback = feedback
        self.entries: List[_Entry] = []
        self._swept = set()
        self.published = False

    def add_input(self, path: Optional[PathLike], role: str = "input", dataset: bool = True) -> None:
        """Protect one more input (named by ``role`` in messages).

        ``dataset``: a raster or vector that GDAL, OGR or QGIS read with its :func:`companions`
        (side-cars, styles, a shapefile's parts), which are protected too; False for plain
        files such as checkpoints (a map may be named after its model: ``forest.tif`` and
        its style ``forest.qml`` beside ``forest.safetensors``).
        """
        if path:
            self.inputs.append((plain_path(path), role, bool(dataset)))

    def add(self, final: PathLike, role: str, *, sidecars: Sequence[str] = (), create: bool = True,
            primary: Optional[PathLike] = None, make_folder: bool = False) -> str:
        """Reserve a temporary file for ``final``; returns its path.

        ``sidecars``: suffixes a writer appends to the file's name (GDAL's ``.aux.xml``);
        they travel with it.  ``primary``: the output this file is a side-car of (a
        ``.qml`` style): a notice is given when it replaces a file while its primary
        did not exist.  ``create=False`` leaves the name free for writers that create
        the file themselves.  ``make_folder``: create a missing folder (else it is an error).
        """
        if make_folder:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(os.fspath(final))), exist_ok=True)
            except OSError as exc:
                raise InputError(f"Cannot create the folder of the {role} '{final}': {exc.strerror or exc}.") from None
        final = check_writable(final, role)
        self._refuse_collisions(final, role, sidecars)
        folder = os.path.dirname(final)
        if folder not in self._swept:
            self._swept.add(folder)
            sweep_leftovers(folder)
        notice = bool(primary) and os.path.exists(final) and not os.path.exists(os.fspath(primary))
        tmp = temp_path(final, create=create)
        self.entries.append(_Entry(final, tmp, role, sidecars, notice))
        return tmp

    def _refuse_collisions(self, final: str, role: str, sidecars: Sequence[str]) -> None:
        mine = [final] + [final + s for s in sidecars]
        for path, input_role, dataset in self.inputs:
            if any(same_file(p, path) for p in mine):
                raise InputError(
                    f"The {role} '{final}' is the same file as the {input_role} '{path}': the outputs must differ "
                    "from the inputs, which are never overwritten."
                )
            hit = dataset and next((p for p in mine for c in companions(path) if same_file(p, c)), None)
            if hit:
                raise InputError(
                    f"The {role} '{final}' would replace '{hit}', which GDAL or QGIS read together with the "
                    f"{input_role} '{path}' (a side-car, style or part of it): choose another name; inputs and "
                    "their side-cars are never overwritten."
                )
        for other in self.entries:
            if any(same_file(p, q) for p in mine for q in other.claims()):
                raise InputError(
                    f"The {role} '{final}' and the {other.role} '{other.final}' are the same file: the outputs must "
                    "differ from each other (a style or side-car file cannot be an output too)."
                )

    def check(self, path: PathLike, role: str) -> None:
        """Refuse ``path`` as :meth:`add` would (an input, a companion of one, another output) without reserving it:
        for a file the run writes by itself later (a resumable state)."""
        self._refuse_collisions(os.path.abspath(os.fspath(path)), role, ())

    def temp(self, final: PathLike) -> str:
        """The temporary path reserved for ``final``."""
        final = os.path.abspath(os.fspath(final))
        for e in self.entries:
            if e.final == final:
                return e.temp
        raise KeyError(final)

    def write_text(self, final: PathLike, role: str, text: str) -> str:
        """Reserve ``final`` and write ``text`` (UTF-8) to its temporary file; returns the final path."""
        tmp = self.add(final, role)
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        return os.path.abspath(os.fspath(final))

    def publish(self) -> Dict[str, str]:
        """Rename every temporary file (and side-car) onto its final name; the first added goes last.

        A side-car the new file does not have is removed from beside the final name, so a
        stale ``.aux.xml`` of an earlier run cannot mislabel the new raster.
        """
        for e in reversed(self.entries):
            publish(e.temp, e.final)
            for s in e.sidecars:
                if os.path.exists(e.temp + s):
                    os.replace(e.temp + s, e.final + s)
                elif os.path.exists(e.final + s):
                    discard(e.final + s)
            if e.notice and self.feedback is not None:
                self.feedback.warning(f"The {e.role} '{e.final}' replaced a file of the same name.")
        self.published = True
        return {e.role: e.final for e in self.entries}

    def discard(self) -> None:
        """Remove every temporary file and side-car that was not published."""
        if self.published:
            return
        for e in self.entries:
            for p in [e.temp] + [e.temp + s for s in e.sidecars]:
                discard(p)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()
        reason = write_failure_reason(exc)
        if reason and not isinstance(exc, OptsarError):
            folders = ", ".join(sorted({f"'{os.path.dirname(e.final)}'" for e in self.entries})) or "the output folder"
            raise InputError(f"Cannot write the outputs in {folders}: {reason}. Nothing was written.") from None


# errno values that mean "this file system will not take the output" (not a problem of an input)
WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is too large for this file system or limit",
                errno.EDQUOT: "the disk quota is exceeded", errno.EROFS: "the file system is read-only"}


def write_failure_reason(exc: Optional[BaseException]) -> Optional[str]:
    """Why writing failed, when ``exc`` is a full disk, a quota, a file-size limit or a read-only file system."""
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return f"{exc.strerror or WRITE_ERRNOS[exc.errno]} ({WRITE_ERRNOS[exc.errno]})"
    text = str(exc or "")
    for errno_value, words in ((errno.ENOSPC, "No space left"), (errno.EFBIG, "File too large"),
                               (errno.EDQUOT, "Disk quota"), (errno.EROFS, "Read-only file system")):
        if words in text:  # GDAL and OGR name the C library's error in their messages
            return f"{words} ({WRITE_ERRNOS[errno_value]})"
    return None


# -- SIGTERM -----------------------------------------------------------------------------------


def _raise_terminated(signum, frame):
    raise Terminated("Stopped by SIGTERM; no output was written.")


def terminate_on_sigterm() -> bool:
    """Make SIGTERM raise :class:`~optsar_plugin.errors.Terminated` in the main thread.

    The exception unwinds the run like a cancellation, so every :class:`OutputSet`
    discards its temporary files.  For process entry points (the CLI, the engine
    worker); returns False where a handler cannot be installed (not the main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _raise_terminated)
    return True
