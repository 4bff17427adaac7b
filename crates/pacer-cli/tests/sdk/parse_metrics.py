"""Parses an OpenMetrics exposition (stdin) with the Prometheus project's
own parser and prints its samples as JSON lines: [name, labels, value].

The parser is strict (types, suffixes, the closing `# EOF`): a malformed
`/metrics` makes this exit nonzero with the parser's error."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            print(json.dumps([s.name, s.labels, s.value]))


if __name__ == "__main__":
    main()
