import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { buildConfig, ConfigError, loadConfig, PACKAGE_ROOT } from '../../src/daemon/config/load.js';
import { envLeaves } from '../../src/daemon/config/env.js';
import { configSchema } from '../../src/daemon/config/schema.js';

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

t.test('an empty config gets every default, with paths resolved against the package root', async (t) => {
  const c = buildConfig({}, { env: {}, host: 'pi5.local' });
  t.equal(c.node_id, 'pi5.local');
  t.equal(c.model.path, join(PACKAGE_ROOT, 'models/tinystories-bita'));
  t.equal(c.data_dir, join(PACKAGE_ROOT, 'var'));
  t.equal(c.socket.path, join(PACKAGE_ROOT, 'var/bitad.sock'));
  t.equal(c.store.path, join(PACKAGE_ROOT, 'var/bitad.db'));
  t.match(c.mqtt, { enabled: true, embedded: true, port: 1883, protocol_version: 4, base_topic: 'bitad', client_id: 'bitad-pi5.local' });
  t.equal(c.queue.capacity, 16);
  t.equal(c.limits.max_payload_bytes, 65536);
});

t.test('an external broker keeps MQTT 5; the embedded one forces 3.1.1', async (t) => {
  t.equal(buildConfig({ mqtt: { embedded: false } }, { env: {} }).mqtt.protocol_version, 5);
  t.equal(buildConfig({ mqtt: { protocol_version: 5 } }, { env: {} }).mqtt.protocol_version, 4);
});

t.test('unknown keys are rejected with their key path', async (t) => {
  t.same(problems(() => buildConfig({ mqtt: { hots: 'x' }, colour: 1 }, { env: {} })).sort(), ['colour: unknown key', 'mqtt.hots: unknown key']);
});

t.test('bad values are rejected with the key path and the reason', async (t) => {
  const p = problems(() => buildConfig({ mqtt: { port: 70000, tls: { enabled: 'yes' } }, log: { level: 'loud' } }, { env: {} }));
  t.ok(p.includes('mqtt.port: must be <= 65535'), p.join('; '));
  t.ok(p.includes('mqtt.tls.enabled: must be boolean'), p.join('; '));
  t.ok(p.some((x) => x.startsWith('log.level: must be one of')), p.join('; '));
});

t.test('BITAD_* variables override file values, coerced by the schema type', async (t) => {
  const c = buildConfig(
    { mqtt: { host: 'from-file' } },
    { env: { BITAD_MQTT_HOST: 'broker.lan', BITAD_MQTT_PORT: '8883', BITAD_MQTT_TLS_ENABLED: 'true', BITAD_MQTT_EMBEDDED: 'false', BITAD_MODEL_EXECUTION_PROVIDERS: 'cuda,cpu', BITAD_DATA_DIR: '/var/lib/bitad' } },
  );
  t.match(c.mqtt, { host: 'broker.lan', port: 8883, embedded: false, tls: { enabled: true } });
  t.same(c.model.execution_providers, ['cuda', 'cpu']);
  t.equal(c.store.path, '/var/lib/bitad/bitad.db');
});

t.test('a bad environment value names the variable; an unknown BITAD_ variable is rejected', async (t) => {
  const p = problems(() => buildConfig({}, { env: { BITAD_QUEUE_CAPACITY: 'many', BITAD_MQTT_HOSTT: 'x', BITAD_CONFIG: '/etc/bitad.yaml' } }));
  t.same(p.sort(), ['BITAD_MQTT_HOSTT: unknown environment variable (no such config key)', 'queue.capacity: must be integer (from BITAD_QUEUE_CAPACITY)']);
});

t.test('a configuration error names the file, and the variable when a value came from one', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-cfgsrc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'bad.yaml');
  writeFileSync(f, 'mqtt:\n  port: "abc"\n');
  const message = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return (e as Error).message;
    }
    return '';
  };
  t.equal(message(() => loadConfig(f, { env: {} })), `invalid configuration in ${f}:\n  mqtt.port: must be integer`);
  writeFileSync(f, 'node_id: b\n');
  t.equal(message(() => loadConfig(f, { env: { BITAD_MQTT_PORT: 'abc' } })), `invalid configuration in ${f}:\n  mqtt.port: must be integer (from BITAD_MQTT_PORT)`);
  t.equal(message(() => loadConfig(undefined, { env: { BITAD_MQTT_PORT: 'abc' } })), 'invalid configuration:\n  mqtt.port: must be integer (from BITAD_MQTT_PORT)', 'no file, no file named');
  t.match(message(() => loadConfig(join(dir, 'missing.yaml'), { env: {} })), /^invalid configuration in .*missing\.yaml:\n  cannot read \(ENOENT/);
  // Checks after the schema name the variable too: a long socket path or a TLS file set in the unit's environment.
  t.match(problems(() => buildConfig({}, { env: { BITAD_SOCKET_PATH: `/tmp/${'x'.repeat(110)}` } })), [/^socket\.path: .* bytes; .* \(from BITAD_SOCKET_PATH\)$/]);
  const tls = { BITAD_MQTT_EMBEDDED: 'false', BITAD_MQTT_TLS_ENABLED: 'true', BITAD_MQTT_TLS_CA: join(dir, 'missing.pem') };
  t.match(problems(() => loadConfig(f, { env: tls, checkFiles: true })), [/^mqtt\.tls\.ca: cannot read .*missing\.pem \(ENOENT\) \(from BITAD_MQTT_TLS_CA\)$/]);
  writeFileSync(f, 'mqtt:\n  port: "abc"\n');
  const run = spawnSync(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), 'start', '--config', f], { env: { ...process.env }, encoding: 'utf8', timeout: 180_000 });
  t.equal(run.status, 2, 'bitad start exits 2');
  t.equal(run.stderr, `bitad: invalid configuration in ${f}:\n  mqtt.port: must be integer\n`);
});

t.test('every config leaf has a distinct environment variable', async (t) => {
  const names = envLeaves(configSchema as never).map((l) => l.name);
  t.equal(new Set(names).size, names.length);
  t.ok(names.includes('BITAD_MQTT_TLS_CA') && names.includes('BITAD_STORE_RETENTION_DAYS'));
});

t.test('a YAML file is loaded; YAML errors and a non-mapping root are reported', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-cfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'c.yaml');
  writeFileSync(f, 'node_id: board-7\nqueue:\n  capacity: 4\n');
  t.match(loadConfig(f, { env: {} }), { node_id: 'board-7', queue: { capacity: 4 } });
  writeFileSync(f, 'queue: [1\n');
  t.match(problems(() => loadConfig(f, { env: {} }))[0], /YAML syntax error/);
  writeFileSync(f, '- a\n- b\n');
  t.same(problems(() => loadConfig(f, { env: {} })), ['(root): must be a mapping']);
  t.match(problems(() => loadConfig(join(dir, 'missing.yaml'), { env: {} }))[0], /cannot read/);
});

t.test('the documented example config is valid', async (t) => {
  const c = loadConfig(join(PACKAGE_ROOT, 'deploy/bitad.example.yaml'), { env: {} });
  t.equal(c.mqtt.embedded, false);
});

t.test('node_id "fleet" is refused when a shared fleet group is configured', async (t) => {
  t.same(problems(() => buildConfig({ node_id: 'fleet', mqtt: { shared_group: 'g' } }, { env: {} })), ['node_id: "fleet" is reserved when mqtt.shared_group is set']);
  t.equal(buildConfig({ node_id: 'fleet' }, { env: {} }).node_id, 'fleet', 'fine without a group');
});

t.test('BITAD_SHARED_DATA (the benches\' and toolchain\'s data folder) is not mistaken for a config key', async (t) => {
  t.same(problems(() => buildConfig({}, { env: { BITAD_SHARED_DATA: '/srv/shared/data' } })), []);
});

t.test('unreadable TLS files are configuration errors naming the key, checked before the daemon starts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bitad-tlscfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'ca.pem'), 'not checked here, only readable');
  const checked = (tls: Record<string, unknown>) => buildConfig({ mqtt: { embedded: false, tls } }, { env: {}, checkFiles: true });
  t.same(problems(() => checked({ enabled: true, ca: join(dir, 'ca.pem') })), [], 'a readable CA passes');
  t.same(problems(() => checked({ enabled: false, ca: join(dir, 'missing.pem') })), [], 'ignored while TLS is off');
  t.match(problems(() => checked({ enabled: true, ca: join(dir, 'missing.pem'), key: join(dir, 'nokey.pem') })), [
    /^mqtt\.tls\.ca: cannot read .*missing\.pem \(ENOENT/,
    /^mqtt\.tls\.key: cannot read .*nokey\.pem \(ENOENT/,
  ]);
  const run = spawnSync(process.execPath, ['--import', 'tsx', join(PACKAGE_ROOT, 'src/cli/main.ts'), 'start'], {
    env: { ...process.env, BITAD_MQTT_EMBEDDED: 'false', BITAD_MQTT_TLS_ENABLED: 'true', BITAD_MQTT_TLS_CA: join(dir, 'missing.pem'), BITAD_DATA_DIR: dir },
    encoding: 'utf8',
    // A safety net, not a bound: under qemu (npm run check:arm64) with the install running beside
    // it, loading the CLI through tsx took over 30 s and the kill looked like a silent exit.
    timeout: 180_000,
  });
  t.equal(run.signal, null, 'bitad start ended by itself');
  t.equal(run.status, 2, 'bitad start exits 2 (configuration error), not 1');
  t.match(run.stderr, /mqtt\.tls\.ca: cannot read .*missing\.pem/);
});

t.test('the tree section: auto by default within 1–32 rows; bad policies and crossed bounds are refused', async (t) => {
  t.same(buildConfig({}, { env: {} }).tree, { policy: 'auto', fixed_rows: 10, min_rows: 1, max_rows: 32, sense_interval_ms: 250 });
  t.equal(buildConfig({}, { env: { BITAD_TREE_POLICY: 'neighbourly' } }).tree.policy, 'neighbourly');
  t.ok(problems(() => buildConfig({ tree: { policy: 'fast' } }, { env: {} })).some((p) => p.startsWith('tree.policy: must be one of')));
  t.same(problems(() => buildConfig({ tree: { min_rows: 20, max_rows: 8 } }, { env: {} })), ['tree.min_rows: 20 is above tree.max_rows (8)']);
  t.ok(problems(() => buildConfig({ tree: { max_rows: 65 } }, { env: {} })).includes('tree.max_rows: must be <= 64'));
  t.same(problems(() => buildConfig({ model: { tree_budget: 16 } }, { env: {} })), ['model.tree_budget: unknown key'], 'the old key is gone (tree.fixed_rows)');
});

t.test('a socket path longer than a Unix socket address holds (107 bytes) is a configuration error naming socket.path', async (t) => {
  const long = `/tmp/${'x'.repeat(110)}/bitad.sock`;
  t.match(problems(() => buildConfig({ socket: { path: long } }, { env: {} })), [/^socket\.path: .* is 126 bytes; a Unix socket path holds at most 107$/]);
  t.match(problems(() => buildConfig({ data_dir: `/tmp/${'d'.repeat(110)}` }, { env: {} })), [/^socket\.path: /], 'also the default path under a long data_dir');
  t.same(problems(() => buildConfig({ data_dir: `/tmp/${'d'.repeat(110)}`, socket: { enabled: false } }, { env: {} })), [], 'no socket, no limit');
  t.same(problems(() => buildConfig({ socket: { path: `/${'x'.repeat(106)}` } }, { env: {} })), [], '107 bytes fit');
});
