#!/usr/bin/env python3
"""Prints every failed test of the TRX files given, with its message and the start of its stack trace.

CI keeps only the tail of the output, so run-tests.sh prints this just before its last line."""
import sys
import xml.etree.ElementTree as ET

NS = "{http://microsoft.com/schemas/VisualStudio/TeamTest/2010}"


def main(paths):
    count = 0
    for path in paths:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError) as error:
            print(f"(cannot read {path}: {error})")
            continue
        for result in root.iter(NS + "UnitTestResult"):
            if result.get("outcome") != "Failed":
                continue
            count += 1
            print(f"FAILED {result.get('testName')} [{result.get('duration')}]")
            message = result.find(f"{NS}Output/{NS}ErrorInfo/{NS}Message")
            stack = result.find(f"{NS}Output/{NS}ErrorInfo/{NS}StackTrace")
            for label, node, limit in (("message", message, 30), ("stack", stack, 12)):
                if node is not None and node.text:
                    lines = node.text.strip().splitlines()
                    for line in lines[:limit]:
                        print(f"  {label}: {line}")
                    if len(lines) > limit:
                        print(f"  {label}: … {len(lines) - limit} more lines")
    if count:
        print(f"{count} failed test(s) listed above")


if __name__ == "__main__":
    main(sys.argv[1:])
