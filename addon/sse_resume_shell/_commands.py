"""The ``sse.*`` commands of the history: sessions, history, stats, clear, settings (fault injection has its own)."""

from __future__ import annotations

import logging

from mitmproxy import command, exceptions

from sse_resume_core._config import DEFAULT, shown
from sse_resume_shell._counters import stats
from sse_resume_shell._flow import show_id
from sse_resume_shell._shell import Shell

__all__ = ["SSECommands"]

log = logging.getLogger("sse_resume")


class SSECommands:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    @command.command("sse.sessions")  # type: ignore[untyped-decorator]
    def sessions_command(self) -> str:
        """The sessions held: key (its first 12 characters name it in other commands), streams, events, age."""
        keys = [info.key[:12] for info in self.shell.store.sessions()]
        held = f"{len(keys)} session{'s' if len(keys) != 1 else ''} held"
        return _answer(
            "sse.sessions",
            f"{held}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" if keys else held,
            self._session_rows(),
        )

    def _session_rows(self) -> list[str]:
        rows = [f"{'session':12}  {'streams':>7}  {'events':>7}  {'bytes':>9}  {'age s':>7}  {'idle s':>7}"]
        for info in self.shell.store.sessions():
            rows.append(
                f"{info.key[:12]}  {info.streams:>7}  {info.events:>7}  {info.bytes:>9}  "
                f"{info.age:>7.1f}  {info.idle:>7.1f}"
            )
        return rows

    @command.command("sse.history")  # type: ignore[untyped-decorator]
    def history_command(self, session: str = "") -> str:
        """The events held for one session (a key or its first characters), oldest first. Without one: the only
        session held, or the list of sessions to choose from."""
        store = self.shell.store
        if not session.strip():
            keys = list(store)
            if len(keys) != 1:
                summary = "no session held" if not keys else f"{len(keys)} sessions held: name one, sse.history KEY"
                return _answer("sse.history", summary, [summary, *(self._session_rows() if keys else [])])
            session = keys[0]
        key = self._find_session(session)
        now = store.clock()
        events = list(store.events(key))
        rows = [f"session {key[:12]}: {'seq':>8}  {'stream':>6}  {'age s':>7}  {'bytes':>6}  id"]
        for e in events:
            size = len(e.raw) if e.raw is not None else 0
            rows.append(f"{'':21}{e.seq:>8}  {e.stream:>6}  {now - e.time:>7.1f}  {size:>6}  {show_id(e.id)}")
        summary = f"session {key[:12]}: {len(events)} event{'s' if len(events) != 1 else ''} held"
        if events:
            summary += f", ids {show_id(events[0].id)} to {show_id(events[-1].id)}"
        return _answer("sse.history", summary, rows)

    @command.command("sse.stats")  # type: ignore[untyped-decorator]
    def stats_command(self) -> str:
        """Counters: sessions, events and bytes held, replays, misses, deduplications, evictions by reason."""
        counts = stats(self.shell)
        summary = ", ".join(f"{name} {counts[name]}" for name in ("sessions", "events", "hits", "misses"))
        return _answer("sse.stats", summary, [f"{name}: {value}" for name, value in counts.items()])

    @command.command("sse.clear")  # type: ignore[untyped-decorator]
    def clear_command(self, *sessions: str) -> str:
        """Forget the given sessions (keys or their first characters), or every session when none is given."""
        store = self.shell.store
        if not sessions:
            n = store.clear()
            return f"cleared {n} session{'s' if n != 1 else ''}"
        keys = [self._find_session(s) for s in sessions]
        for key in keys:
            store.drop_session(key)
        return f"cleared {len(keys)} session{'s' if len(keys) != 1 else ''}"

    @command.command("sse.settings")  # type: ignore[untyped-decorator]
    def settings_command(self) -> str:
        """The settings in effect (after defaults, config.yaml, the sse_config file and options), and the source of
        each. Secrets are not shown, only whether they are set."""
        from mitmproxy import ctx

        rows = [f"{'option':24}  {'value':24}  source"]
        changed = 0
        for name, text in shown(self.shell.settings).items():
            source = self.shell.sources.get(name, DEFAULT)
            changed += source != DEFAULT
            rows.append(f"{'sse_' + name:24}  {text:24}  {source}")
        rows.append(f"{'sse_config':24}  {ctx.options.sse_config or '(unset)':24}  option")
        summary = f"{len(rows) - 1} settings, {changed} not at their defaults"
        return _answer("sse.settings", summary, rows)

    def _find_session(self, prefix: str) -> str:
        store = self.shell.store
        matches = [key for key in store if key.startswith(prefix.strip())] if prefix.strip() else []
        if len(matches) != 1:
            raise exceptions.CommandError(
                f"{'no' if not matches else 'more than one'} session matches {prefix!r}: see sse.sessions"
            )
        return matches[0]


def _in_web() -> bool:
    """Whether this is mitmweb, whose command bar shows a result on one line, as JSON."""
    from mitmproxy import ctx

    return type(ctx.master).__module__.startswith("mitmproxy.tools.web")


def _answer(name: str, summary: str, rows: list[str]) -> str:
    """A command's answer, as the tool running it shows it well.

    mitmproxy's console shows a result's lines as they are: the table comes back. mitmweb's command bar shows it
    on one line, as a JSON string: there the answer is the one-line ``summary``, and the table goes to the event
    log, which shows each line (its first line names the command)."""
    if not _in_web():
        return "\n".join(rows)
    log.info("%s\n%s", name, "\n".join(rows))
    return f"{summary} (the table is in the event log)"
