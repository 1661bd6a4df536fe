// bitatool --help: every option of every command says what it is, and states its default once
// (argparse's "(default: …)" and a hand-written one must not both appear).
import t from 'tap';
import { py } from './helpers.js';

type Option = { command: string; option: string; help: string | null; has_default: boolean };

// Each option's help as --help prints it (the formatter's expansion), in one interpreter.
const OPTIONS = `
import argparse, json
from bitatool.__main__ import COMMAND_MODULES
import importlib
root = argparse.ArgumentParser(prog="bitatool")
sub = root.add_subparsers()
for name in COMMAND_MODULES:
    importlib.import_module(name).register(sub)
out = []
for command, p in sub.choices.items():
    fmt = p._get_formatter()
    for a in p._actions:
        if isinstance(a, argparse._HelpAction) or not a.option_strings:
            continue
        text = fmt._expand_help(a) if a.help and a.help.strip() else None
        has_default = a.default not in (None, False, argparse.SUPPRESS) and not a.required
        out.append({"command": command, "option": a.option_strings[-1], "help": text, "has_default": has_default})
print(json.dumps(out))
`;

t.test('every option has help text that states its default exactly once', async (t) => {
  const options = JSON.parse(py(['-c', OPTIONS])) as Option[];
  t.ok(options.length > 100, `${options.length} options`);
  for (const o of options) {
    const what = `${o.command} ${o.option}`;
    if (!o.help) {
      t.fail(`${what}: no help text`);
      continue;
    }
    const defaults = o.help.match(/\(default\b/g)?.length ?? 0;
    if (o.has_default) t.equal(defaults, 1, `${what}: its default once: ${o.help}`);
    else t.ok(defaults <= 1, `${what}: at most one default: ${o.help}`);
  }
});
