import t from 'tap';
import { readFileSync, existsSync } from 'node:fs';
import { BoardSensor, LoadFeed } from '../../../src/daemon/sensing/index.js';
import { findOnPath } from '../../../src/daemon/sensing/gpu.js';
import { fakeRoot, until, type FakeRoot } from './fake-root.js';

/** A fake nvidia-smi that logs "<pid> <args>" on start, then runs `body`. */
function fakeSmi(f: FakeRoot, body: string, path = '/bin/nvidia-smi'): { bin: string; starts: () => string[] } {
  const log = `${f.root}/smi.log`;
  const bin = f.script(path, `#!/bin/sh\necho "$$ $*" >> '${log}'\n${body}\n`);
  return { bin, starts: () => (existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : []) };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

t.test('one nvidia-smi child for many samples; the busiest GPU wins; stop() kills it', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  const smi = fakeSmi(f, `while true; do printf '0, 35\\n1, 80\\n2, [N/A]\\n'; sleep 0.1; done`);
  const s = new BoardSensor({ root: f.root, nvidiaSmi: smi.bin });
  t.ok(await until(() => s.sample().gpuBusy === 0.8), 'max over GPUs, [N/A] skipped');
  t.equal(s.sample().gpuSource, 'nvidia');
  for (let i = 0; i < 50; i++) s.sample();
  const starts = smi.starts();
  t.equal(starts.length, 1, 'spawned once, not per sample');
  const [pid, ...args] = starts[0].split(' ');
  t.same(args, ['--query-gpu=index,utilization.gpu', '--format=csv,noheader,nounits', '-lms', '500']);
  s.stop();
  t.ok(await until(() => !alive(Number(pid))), 'the child is gone after stop()');
  t.equal(s.sample().gpuBusy, null);
});

t.test('bad nvidia-smi output is skipped line by line; only bad output is null', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  const mixed = fakeSmi(f, `printf 'garbage\\nNVIDIA-SMI has failed\\n1, 55\\n%%%%\\n0, 101x\\n'; exec sleep 5`, '/bin/mixed');
  const s = new BoardSensor({ root: f.root, nvidiaSmi: mixed.bin });
  t.teardown(() => s.stop());
  t.ok(await until(() => s.sample().gpuBusy === 0.55));

  const g = fakeRoot();
  t.teardown(g.cleanup);
  const bad = fakeSmi(g, `printf 'garbage\\n0 35\\n\\n'; touch '${g.root}/printed'; exec sleep 5`, '/bin/bad');
  const b = new BoardSensor({ root: g.root, nvidiaSmi: bad.bin });
  t.teardown(() => b.stop());
  t.ok(await until(() => existsSync(`${g.root}/printed`)), 'the fake printed its lines');
  await new Promise((r) => setTimeout(r, 200));
  t.equal(b.sample().gpuBusy, null);
  t.equal(b.sample().gpuSource, null);
});

t.test('a child that exits, hangs, is absent or not executable reads null without throwing', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  const exits = fakeSmi(f, `printf '0, 60\\n'; sleep 0.5; exit 1`, '/bin/exits');
  const s = new BoardSensor({ root: f.root, nvidiaSmi: exits.bin });
  t.teardown(() => s.stop());
  t.ok(await until(() => s.sample().gpuBusy === 0.6), 'a value while it runs');
  t.ok(await until(() => s.sample().gpuBusy === null), 'null once it exited');

  const hangs = fakeSmi(f, `printf '0, 70\\n'; exec sleep 5`, '/bin/hangs');
  const h = new BoardSensor({ root: f.root, nvidiaSmi: hangs.bin, nvidia: { staleMs: 300 } });
  t.teardown(() => h.stop());
  t.ok(await until(() => h.sample().gpuBusy === 0.7));
  t.ok(await until(() => h.sample().gpuBusy === null), 'a frozen value expires');

  const absent = new BoardSensor({ root: f.root, nvidiaSmi: `${f.root}/no/such/nvidia-smi` });
  f.write('/bin/plain', '#!/bin/sh\necho "0, 1"\n'); // mode 644
  const notExec = new BoardSensor({ root: f.root, nvidiaSmi: `${f.root}/bin/plain` });
  await new Promise((r) => setTimeout(r, 200));
  t.equal(absent.sample().gpuBusy, null);
  t.equal(notExec.sample().gpuBusy, null);
  absent.stop();
  notExec.stop();
  const empty = new BoardSensor({ root: f.root, nvidiaSmi: '' }); // spawn() throws on this one
  t.equal(empty.sample().gpuBusy, null);
  empty.stop();
});

t.test('nvidia-smi is found on PATH under the root; the Jetson file wins over it', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  t.equal(findOnPath('nvidia-smi', f.root, '/usr/local/bin:/usr/bin'), null);
  const dir = (process.env.PATH ?? '/usr/bin').split(':')[0];
  const smi = fakeSmi(f, `while true; do printf '0, 20\\n'; sleep 0.1; done`, `${dir}/nvidia-smi`);
  t.equal(findOnPath('nvidia-smi', f.root, `/nowhere:${dir}`), smi.bin);
  const s = new BoardSensor({ root: f.root }); // default: search PATH
  t.teardown(() => s.stop());
  t.ok(await until(() => s.sample().gpuBusy === 0.2));
  f.write('/sys/devices/gpu.0/load', '900\n');
  const x = s.sample();
  t.same([x.gpuBusy, x.gpuSource], [0.9, 'jetson']);
});

t.test('LoadFeed samples on its timer, keeps the latest, and stops (with the sensor it made)', async (t) => {
  const f = fakeRoot();
  t.teardown(f.cleanup);
  f.write('/proc/loadavg', '1.5 1 1 1/1 1\n');
  const smi = fakeSmi(f, `while true; do printf '0, 20\\n'; sleep 0.1; done`);
  const seen: number[] = [];
  const feed = new LoadFeed({ intervalMs: 20, sensorOptions: { root: f.root, nvidiaSmi: smi.bin }, onSample: (s) => seen.push(s.ts) });
  t.equal(feed.latest, null);
  feed.start();
  t.equal(seen.length, 1, 'a first sample at once');
  t.ok(await until(() => seen.length >= 4), 'then one per tick');
  t.equal(feed.latest?.loadAvg1, 1.5);
  feed.stop();
  const n = seen.length;
  await new Promise((r) => setTimeout(r, 100));
  t.equal(seen.length, n, 'no callbacks after stop()');
  const pid = Number(smi.starts()[0].split(' ')[0]);
  t.ok(await until(() => !alive(pid)), 'the feed stopped the sensor it built');
});
