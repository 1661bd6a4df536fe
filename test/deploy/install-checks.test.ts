import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/daemon/config/load.js';

// deploy/preflight.sh reads every fact about the board through PREFLIGHT_* variables, so a 32-bit
// Raspberry Pi OS, Debian's Node 18 or a full SD card can be played here. install.sh runs with
// apt-get, useradd, npm, rsync and systemctl replaced by stubs that fail loudly: a check that let
// an unfit board through would show as "stub reached" instead of changing this machine.
const root = process.getuid?.() === 0;
const NEEDS_ROOT = { skip: root ? false : 'install.sh itself needs root (CI runs as root)' };
const dir = mkdtempSync(join(tmpdir(), 'bitad-preflight-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const stubs = join(dir, 'bin');
spawnSync('mkdir', ['-p', stubs]);
for (const cmd of ['apt-get', 'useradd', 'usermod', 'npm', 'rsync', 'systemctl', 'curl']) {
  writeFileSync(join(stubs, cmd), `#!/bin/sh\necho "stub reached: ${cmd}" >&2\nexit 97\n`);
  chmodSync(join(stubs, cmd), 0o755);
}

function fakeNode(version: string): string {
  const p = join(dir, `node-${version}`);
  writeFileSync(p, `#!/bin/sh\n[ "$1" = -p ] && echo ${version}\n`);
  chmodSync(p, 0o755);
  return p;
}

const BOARD_64 = { PREFLIGHT_UNAME_M: 'aarch64', PREFLIGHT_LONG_BIT: '64', PREFLIGHT_DPKG_ARCH: 'arm64', PREFLIGHT_MEM_MB: '4096', PREFLIGHT_FREE_MB: '20000' };

function run(script: 'install.sh' | 'preflight.sh', args: string[], env: Record<string, string>) {
  const r = spawnSync('bash', [join(PACKAGE_ROOT, 'deploy', script), ...args], {
    encoding: 'utf8',
    env: { ...process.env, PATH: `${stubs}:${process.env.PATH}`, ...env },
    timeout: 15_000,
  });
  return { code: r.status, out: r.stdout + r.stderr };
}

t.test('Node < 20 is refused, saying how to get 20', async (t) => {
  const env = { ...BOARD_64, PREFLIGHT_NODE: fakeNode('18.19.0') };
  const pre = run('preflight.sh', ['--skip-node'], env);
  t.equal(pre.code, 1, 'preflight fails');
  t.match(pre.out, /Node\.js 18\.19\.0 at .* is too old/);
  t.match(pre.out, /Debian 12 \(bookworm\) ship 18/, 'says why a board has 18');
  t.match(pre.out, /deb\.nodesource\.com\/setup_20\.x/, 'says how to get 20');
  t.match(pre.out, /run it without --skip-node/);
  await t.test('install.sh refuses before changing anything', NEEDS_ROOT, async (t) => {
    const inst = run('install.sh', ['--skip-node'], env);
    t.equal(inst.code, 1);
    t.match(inst.out, /too old/);
    t.notMatch(inst.out, /stub reached/);
  });
});

t.test('no Node at all with --skip-node is refused too', async (t) => {
  const r = run('preflight.sh', ['--skip-node'], { ...BOARD_64, PREFLIGHT_NODE: join(dir, 'no-such-node') });
  t.equal(r.code, 1);
  t.match(r.out, /no Node\.js at/);
  t.match(r.out, /setup_20\.x/);
});

t.test('a 32-bit userland is refused, also on a 64-bit kernel', async (t) => {
  const node = fakeNode('20.19.2');
  const cases: [string, Record<string, string>][] = [
    ['Raspberry Pi OS 32-bit on a 64-bit kernel', { PREFLIGHT_UNAME_M: 'aarch64', PREFLIGHT_LONG_BIT: '32', PREFLIGHT_DPKG_ARCH: 'armhf' }],
    ['Raspberry Pi OS 32-bit on a 32-bit kernel', { PREFLIGHT_UNAME_M: 'armv7l', PREFLIGHT_LONG_BIT: '32', PREFLIGHT_DPKG_ARCH: 'armhf' }],
    ['armhf packages on a 64-bit getconf', { PREFLIGHT_UNAME_M: 'aarch64', PREFLIGHT_LONG_BIT: '64', PREFLIGHT_DPKG_ARCH: 'armhf' }],
  ];
  for (const [label, arch] of cases) {
    const r = run('preflight.sh', [], { ...BOARD_64, ...arch, PREFLIGHT_NODE: node });
    t.equal(r.code, 1, `${label}: refused`);
    t.match(r.out, /32-bit userland/, `${label}: says so`);
    t.match(r.out, /onnxruntime-node ships no 32-bit ARM/, `${label}: says why`);
    t.match(r.out, /Raspberry Pi OS \(64-bit\)/, `${label}: says what to do`);
  }
  await t.test('install.sh refuses before changing anything', NEEDS_ROOT, async (t) => {
    const inst = run('install.sh', [], { ...BOARD_64, ...cases[0][1], PREFLIGHT_NODE: node });
    t.equal(inst.code, 1);
    t.match(inst.out, /32-bit userland/);
    t.notMatch(inst.out, /stub reached/);
  });
});

t.test('a fit board passes with a disk and memory estimate, and install.sh goes on', async (t) => {
  const env = { ...BOARD_64, PREFLIGHT_NODE: fakeNode('22.3.0') };
  const r = run('preflight.sh', ['--skip-node'], env);
  t.equal(r.code, 0, 'passes');
  t.match(r.out, /node 22\.3\.0: ok/);
  t.match(r.out, /model tinystories-bita: \d+ MB on disk/);
  t.match(r.out, /estimate: disk (\d+) MB during the install .*memory ≈ (\d+) MB/);
  await t.test('install.sh goes past the checks to the install proper (here: the apt-get stub)', NEEDS_ROOT, async (t) => {
    const inst = run('install.sh', ['--skip-node'], env);
    t.match(inst.out, /stub reached: apt-get/);
  });
});

t.test('too little disk is refused; too little memory is a warning', async (t) => {
  const node = fakeNode('20.19.2');
  const disk = run('preflight.sh', [], { ...BOARD_64, PREFLIGHT_NODE: node, PREFLIGHT_FREE_MB: '300' });
  t.equal(disk.code, 1);
  t.match(disk.out, /not enough disk: 300 MB free where \/opt\/bitad goes/);
  const mem = run('preflight.sh', [], { ...BOARD_64, PREFLIGHT_NODE: node, PREFLIGHT_MEM_MB: '64' });
  t.equal(mem.code, 0, 'memory alone does not stop the install');
  t.match(mem.out, /warning: 64 MB of memory is less than/);
});

t.test('without --skip-node an old Node is reported and left for install.sh to replace', async (t) => {
  const r = run('preflight.sh', [], { ...BOARD_64, PREFLIGHT_NODE: fakeNode('18.19.0') });
  t.equal(r.code, 0);
  t.match(r.out, /too old/);
  t.match(r.out, /install\.sh now installs Node 20 from NodeSource/);
});
