#!/usr/bin/env python3
"""Validates a YAML document against a JSON schema (JSON or YAML file) with
the `jsonschema` package (PyPI), using the draft the schema declares.
Prints `valid` or every error with its path; exit 0 valid, 1 invalid,
2 usage or a missing module.

    python3 tests/deploy/validate.py SCHEMA DOCUMENT
"""
import json
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:  # the test says what to install
    print(f"missing Python module: {e.name} (pip install jsonschema pyyaml)")
    sys.exit(2)

if len(sys.argv) != 3:
    print(__doc__)
    sys.exit(2)

with open(sys.argv[1]) as f:
    schema = json.load(f) if sys.argv[1].endswith(".json") else yaml.safe_load(f)
with open(sys.argv[2]) as f:
    doc = yaml.safe_load(f)

# compose-spec.json spells its draft `http://json-schema.org/draft/2019-09/schema#`,
# which jsonschema does not look up by that exact URI: pick by the draft's name.
declared = str(schema.get("$schema", ""))
if "2019-09" in declared:
    cls = jsonschema.Draft201909Validator
elif "draft-07" in declared:
    cls = jsonschema.Draft7Validator
else:
    cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
errors = sorted(cls(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("/".join(str(p) for p in e.path) or "(root)", ":", e.message)
print("valid" if not errors else f"{len(errors)} error(s)")
sys.exit(1 if errors else 0)
