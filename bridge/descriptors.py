"""File descriptors: the bridge's bounds must fit the process's ``RLIMIT_NOFILE``.

Every open client connection (at most ``max_sessions``) and every upstream connection (at
most ``max_streams``: one per request in flight, pooled ones included) is a descriptor. A
process that runs out of them fails in the worst places: ``accept`` fails (asyncio then stops
accepting for a second at a time, so legitimate clients cannot even connect), upstream
connects fail (502 for everyone), and so does opening the quote provider's files. The default
soft limit under systemd and in many container runtimes is 1024, which one client source
holding its 32 connections with 32 requests each would exceed.

So the bounds are made to fit before the first connection: :func:`descriptors_needed` says
what a configuration can make a process hold, and :func:`ensure_descriptors` raises the soft
limit to that (never beyond the hard limit, which only the operator can raise), or refuses to
start with :class:`DescriptorLimitError` naming the settings to lower. A worker
(``bridge.workers``) checks its own share.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Final

from bridge.config import BridgeConfig
from bridge.listener import MAX_LINGERING_REFUSALS

# Descriptors that are not connections the bounds count: stdio and logs, the listening and
# metrics sockets, the event loop's selector and self-pipe, the quote provider's files, and
# the metrics scrapes being served (at most bridge.metrics.MAX_SCRAPES).
BASE_DESCRIPTORS: Final = 64


class DescriptorLimitError(ValueError):
    """The configuration does not fit the process: the hard ``RLIMIT_NOFILE`` is below what
    the configured bounds need; the message names the figures and the settings behind them."""


def descriptors_needed(config: BridgeConfig) -> int:
    """Descriptors one process serving ``config`` may hold at once: its connections, its
    upstream connections, refused connections being answered, and the base."""
    return config.max_sessions + config.max_streams + MAX_LINGERING_REFUSALS + BASE_DESCRIPTORS


def ensure_descriptors(
    config: BridgeConfig,
    *,
    get_limit: Callable[[], tuple[int, int]] = lambda: resource.getrlimit(resource.RLIMIT_NOFILE),
    set_limit: Callable[[tuple[int, int]], None] = lambda limits: resource.setrlimit(
        resource.RLIMIT_NOFILE, limits
    ),
) -> int:
    """Make ``RLIMIT_NOFILE``'s soft limit cover :func:`descriptors_needed`; the soft limit
    in force afterwards.

    Raises :class:`DescriptorLimitError` when the hard limit is lower (nothing is changed).
    ``get_limit`` and ``set_limit`` are the process's own unless a test gives others.
    """
    needed = descriptors_needed(config)
    soft, hard = get_limit()
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise DescriptorLimitError(
            f"the bridge's bounds need {needed} file descriptors (max_sessions "
            f"{config.max_sessions} + max_streams {config.max_streams} + "
            f"{needed - config.max_sessions - config.max_streams} for the rest) but the hard "
            f"RLIMIT_NOFILE is {hard}: raise it (systemd LimitNOFILE=, docker --ulimit "
            "nofile=, ulimit -Hn) or lower --max-sessions / --max-streams"
        )
    set_limit((needed, hard))
    return needed
