"""The errors clickwire raises on purpose.

```
ClickwireError
├── SettingsError (clickwire.settings)   a CLICKWIRE_* variable is missing or malformed
├── StartupError                         a dependency is not ready: broker, topics, ClickHouse
│   ├── BrokerUnavailable                no broker answered a metadata request in time
│   └── TopicsMissing                    declared topics are absent or have too few partitions
└── StackError                           the local stack could not be fetched, formatted or started
```
Codec errors live in :mod:`clickwire.codec`, ClickHouse errors in :mod:`clickwire.clickhouse`.
Entry points print ``str(error)`` (one line) and exit with status 2 for these.
"""

from __future__ import annotations


class ClickwireError(Exception):
    """Base of every error clickwire raises on purpose."""


class StartupError(ClickwireError):
    """A dependency the service needs is not ready."""


class BrokerUnavailable(StartupError):
    """No Kafka broker answered a metadata request within the deadline."""


class TopicsMissing(StartupError):
    """Declared topics are absent or have fewer partitions than declared."""


class StackError(ClickwireError):
    """The local stack could not be fetched, formatted or started."""
