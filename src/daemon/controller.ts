/**
 * The daemon: ordered start (store → engine → scheduler → broker → MQTT → socket → telemetry →
 * READY) and the reverse stop, with a drain in between so every accepted request gets its final
 * reply. Config is data passed in; the engine factory is injectable (tests and the transport
 * benchmark run a model-free FakeEngine through it: test/daemon/helpers/fake-daemon.ts).
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { loadEngine } from '../engine/index.js';
import type { Engine } from '../engine/types.js';
import type { BitadConfig } from './config/schema.js';
import { Dispatcher } from './dispatcher.js';
import { EngineSupervisor } from './engine-supervisor.js';
import { overallState, type ComponentHealth, type Components } from './health.js';
import { SystemdNotifier } from './lifecycle/notify.js';
import { listeners, listenOn, preflight, StartupError } from './lifecycle/preflight.js';
import { createLogger } from './logger.js';
import { Scheduler } from './scheduler/scheduler.js';
import { summarize } from './store/stats.js';
import { Store } from './store/store.js';
import { LoadMonitor } from './telemetry/load.js';
import { DaemonMetrics } from './metrics/metrics.js';
import { MetricsServer } from './metrics/server.js';
import { boardLoad, LoadFeed } from './sensing/index.js';
import { TelemetryPublisher } from './telemetry/telemetry.js';
import { startEmbeddedBroker, type EmbeddedBroker } from './transport/broker.js';
import { MqttTransport } from './transport/mqtt.js';
import { SocketTransport } from './transport/socket.js';
import { VERSION } from './version.js';

export interface ControllerDeps {
  engineFactory?: (cfg: BitadConfig) => Promise<Engine>;
  log?: Logger;
  notifier?: SystemdNotifier;
}

export async function createEngine(cfg: BitadConfig): Promise<Engine> {
  return loadEngine(cfg.model.path, {
    variant: cfg.model.variant,
    threads: cfg.model.threads,
    executionProviders: cfg.model.execution_providers,
    treePolicy: cfg.tree.policy,
    treeBudget: cfg.tree.fixed_rows,
    treeMinRows: cfg.tree.min_rows,
    treeMaxRows: cfg.tree.max_rows,
  });
}

type State = 'created' | 'starting' | 'online' | 'stopping' | 'stopped';

/** Thrown inside start() when stop() was called meanwhile: not a failure, start just ends. */
class StartAborted extends Error {}

export class Controller {
  readonly log: Logger;
  state: State = 'created';
  engine: Engine | null = null;
  /** The engine's keeper (restarts a dead or hung engine); `engine` is the same object. */
  supervisor: EngineSupervisor | null = null;
  store: Store | null = null;
  scheduler: Scheduler | null = null;
  dispatcher: Dispatcher | null = null;
  broker: EmbeddedBroker | null = null;
  mqtt: MqttTransport | null = null;
  socket: SocketTransport | null = null;
  private loadMonitor: LoadMonitor | null = null;
  /** Fast board sensors feeding the engine's tree sizing (and status); separate from the slow LoadMonitor. */
  private loadFeed: LoadFeed | null = null;
  private telemetry: TelemetryPublisher | null = null;
  /** Prometheus metrics (config metrics.enabled) and their HTTP endpoint; `metricsServer.port` is the bound port. */
  metrics: DaemonMetrics | null = null;
  metricsServer: MetricsServer | null = null;
  private watchdogTimer: NodeJS.Timeout | null = null;
  private readonly notifier: SystemdNotifier;
  private startedAt = 0;
  /** The running start(), which a stop() during start waits for. */
  private starting: Promise<void> | null = null;
  private lastLoadStored = 0;

  constructor(
    readonly cfg: BitadConfig,
    private readonly deps: ControllerDeps = {},
  ) {
    this.log = deps.log ?? createLogger(cfg.log.level, cfg.node_id);
    this.notifier = deps.notifier ?? new SystemdNotifier(this.log);
  }

  async start(): Promise<void> {
    if (this.state !== 'created') throw new Error(`cannot start from state ${this.state}`);
    this.state = 'starting';
    this.starting = this.startParts();
    await this.starting;
  }

  /** A stop() during start (SIGTERM while the model loads) ends it here, before anything more opens. */
  private stillStarting(): void {
    if (this.state !== 'starting') throw new StartAborted();
  }

  private async startParts(): Promise<void> {
    const { cfg, log } = this;
    try {
      await preflight(cfg); // a port or socket in use fails here, before the model load
      if (cfg.store.enabled) {
        // A store that cannot open its file starts degraded (see store.ts); only a newer schema throws.
        this.store = new Store(cfg.store.path, {
          flushMs: cfg.store.flush_ms,
          retentionDays: cfg.store.retention_days,
          maxRows: cfg.store.max_rows,
          maxBufferedRows: cfg.store.max_buffered_rows,
          synchronous: cfg.store.synchronous,
          log: log.child({ component: 'store' }),
        });
      }
      const t0 = performance.now();
      const factory = this.deps.engineFactory ?? createEngine;
      const supervisor = new EngineSupervisor({ load: () => factory(cfg), log });
      await supervisor.start();
      this.engine = this.supervisor = supervisor;
      log.info({ model: this.engine.info(), load_ms: Math.round(performance.now() - t0) }, 'engine loaded');
      this.stillStarting();
      this.scheduler = new Scheduler(this.engine, cfg.queue.capacity);
      if (cfg.metrics.enabled) this.metrics = new DaemonMetrics(this.metricsSources());
      this.dispatcher = new Dispatcher(this.scheduler, this.store, () => this.engine?.info().model ?? 'none', () => this.health(), log, {
        maxPayloadBytes: cfg.limits.max_payload_bytes,
        maxTokens: cfg.limits.max_tokens,
        defaultMaxTokens: cfg.limits.default_max_tokens,
        defaultDeadlineMs: cfg.limits.default_deadline_ms,
        onFinal: (row, run) => this.observeMetrics(row, run),
      });
      await this.startTransports(this.dispatcher);
      this.startLoadFeed();
      await this.startMetricsServer();
      if (cfg.telemetry.enabled) {
        this.loadMonitor = new LoadMonitor(cfg.telemetry.load_poll_s * 1000, (s) => this.onLoadSample(s));
        this.loadMonitor.start();
        if (this.mqtt) {
          const mqtt = this.mqtt;
          this.telemetry = new TelemetryPublisher(cfg.telemetry.interval_s * 1000, this.telemetrySources(), (body) => mqtt.publish('telemetry', body));
          this.telemetry.start();
        }
      }
      this.stillStarting();
      this.startedAt = performance.now();
      this.state = 'online';
      await this.notifier.ready(`serving ${this.engine.info().model}`);
      this.startWatchdog();
      log.info({ base: this.mqtt?.base, socket: this.socket ? cfg.socket.path : null, broker_port: this.broker?.port }, 'bitad ready');
    } catch (e) {
      // An expected fault (a port or socket in use) is said by its message; anything else keeps its stack.
      if (e instanceof StartupError) log.error({ setting: e.setting, code: e.code, reason: e.message }, 'start failed; stopping what started');
      else if (!(e instanceof StartAborted)) log.error({ err: e }, 'start failed; stopping what started');
      await this.shutDown();
      if (!(e instanceof StartAborted)) throw e;
      log.info('stopped before it was ready');
    }
  }

  /** The embedded broker (when configured), MQTT and the Unix socket, each serving the dispatcher. */
  private async startTransports(dispatcher: Dispatcher): Promise<void> {
    const { cfg, log } = this;
    if (cfg.mqtt.enabled) {
      let port = cfg.mqtt.port;
      const broker = listeners(cfg).broker;
      if (broker) {
        this.broker = await listenOn(broker, () => startEmbeddedBroker(broker.host, broker.port));
        port = this.broker.port;
        log.info({ port }, `embedded MQTT broker listening on ${broker.host}`);
      }
      this.mqtt = new MqttTransport({ cfg: { ...cfg.mqtt, host: broker ? broker.host : cfg.mqtt.host }, nodeId: cfg.node_id, port, dispatcher, log, info: () => this.info(), homeassistant: cfg.homeassistant, maxPayloadBytes: cfg.limits.max_payload_bytes });
      await this.mqtt.start();
    }
    if (cfg.socket.enabled) {
      this.socket = new SocketTransport({ path: cfg.socket.path, dispatcher, maxLineBytes: cfg.limits.max_payload_bytes, maxInFlight: cfg.socket.max_in_flight, log });
      await this.socket.start();
    }
  }

  /**
   * Drain then stop in reverse order. New requests answer `shutting_down`; queued ones get it at
   * once; the running generation may finish within lifecycle.drain_timeout_ms.
   */
  async stop(reason = 'stop requested'): Promise<void> {
    if (this.state === 'stopping' || this.state === 'stopped') return;
    const starting = this.state === 'starting';
    this.state = 'stopping';
    this.log.info({ reason }, 'stopping');
    await this.notifier.stopping();
    // start() sees the state at its next step and stops what it had opened; its error is its caller's.
    if (starting) return this.starting?.catch(() => undefined);
    await this.shutDown();
    this.log.info('stopped');
  }

  /** New requests refused, the queue drained (the running generation within drain_timeout_ms), then everything closed. */
  private async shutDown(): Promise<void> {
    this.dispatcher?.beginShutdown();
    await this.scheduler?.drain(this.cfg.lifecycle.drain_timeout_ms);
    await this.teardown();
    this.state = 'stopped';
  }

  private async teardown(): Promise<void> {
    // Final replies wait for their row's commit (end of the turn): send them before transports close.
    this.store?.flush();
    const step = async (name: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (e) {
        this.log.error({ err: e }, `stop: ${name} failed`);
      }
    };
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    this.telemetry?.stop();
    this.loadMonitor?.stop();
    this.loadFeed?.stop();
    await step('metrics', () => this.metricsServer?.stop());
    await step('socket', () => this.socket?.stop());
    await step('mqtt', () => this.mqtt?.stop());
    await step('broker', () => this.broker?.close());
    await step('store', () => this.store?.close());
    await step('engine', () => this.engine?.close());
  }

  /** WATCHDOG=1 only while the engine is alive (engineAlive): a hung or lost engine lets systemd restart us. */
  private startWatchdog(): void {
    const ms = this.notifier.watchdogMs;
    if (!ms) return;
    this.watchdogTimer = setInterval(() => {
      if (this.engineAlive()) void this.notifier.watchdog();
      else this.log.warn({ engine: this.engineHealth() }, 'engine not making progress or down too long; withholding watchdog ping');
    }, ms).unref();
  }

  /**
   * The one rule for "the engine can still come back on its own": it makes progress (or idles)
   * and has not been down (restarting) longer than lifecycle.engine_stall_ms.
   */
  engineAlive(): boolean {
    const stallMs = this.cfg.lifecycle.engine_stall_ms;
    if ((this.supervisor?.downForMs() ?? 0) >= stallMs) return false;
    return this.scheduler?.responsive(stallMs) ?? false;
  }

  private onLoadSample(s: import('./telemetry/load.js').LoadSample): void {
    if (!this.store || s.ts - this.lastLoadStored < this.cfg.store.load_sample_s * 1000) return;
    this.lastLoadStored = s.ts;
    this.store.recordLoad({ ...s, queue_depth: this.scheduler?.depth ?? null, tree_budget: this.engine?.info().treeBudget ?? null });
  }

  /** Board load every tree.sense_interval_ms into the engine, where the tree sizing reads it per step. */
  private startLoadFeed(): void {
    this.loadFeed = new LoadFeed({
      intervalMs: this.cfg.tree.sense_interval_ms,
      onSample: (s) => this.engine?.setLoad(boardLoad(s)),
    });
    this.loadFeed.start();
  }

  private async startMetricsServer(): Promise<void> {
    if (!this.metrics) return;
    const at = listeners(this.cfg).metrics!;
    const server = (this.metricsServer = new MetricsServer(this.metrics.registry, at.host, at.port, this.log));
    await listenOn(at, () => server.start());
    this.log.info({ url: `http://${at.host}:${server.port}/metrics` }, 'Prometheus metrics listening');
  }

  private metricsSources() {
    return {
      running: () => (this.scheduler?.busy ? 1 : 0),
      waiting: () => this.scheduler?.depth ?? 0,
      tree: () => this.treeStatus(),
      build: () => ({ version: VERSION, model: this.engine?.info().model ?? 'none', node: this.cfg.node_id }),
    };
  }

  /** Metrics must never cost a request its reply. */
  private observeMetrics(row: import('./store/store.js').RequestRow, run?: import('./scheduler/scheduler.js').JobOutcome): void {
    try {
      this.metrics?.observe(row, run);
    } catch (e) {
      this.log.warn({ err: e }, 'metrics update failed');
    }
  }

  /** The tree sizing as `bitad status`, health and telemetry show it (docs/daemon.md "Load-aware tree"). */
  treeStatus(): Record<string, unknown> | null {
    const t = this.engine?.info().tree;
    if (!t) return null;
    const b = this.loadFeed?.latest;
    const pct = (x: number | null | undefined) => (x === null || x === undefined ? null : Math.round(x * 1000) / 10);
    return {
      policy: t.policy,
      active: t.active,
      rows: t.rows,
      min_rows: t.minRows,
      max_rows: t.maxRows,
      reason: t.reason,
      changes: t.changes,
      board: b ? { others_cpu_pct: pct(b.othersCpu), self_cpu_pct: pct(b.selfCpu), cpu_pressure_pct: pct(b.cpuPressure), cpu_temp_c: b.cpuTempC, throttled: b.throttled, gpu_busy_pct: pct(b.gpuBusy), power_mode: b.powerMode ?? null } : null,
    };
  }

  private telemetrySources() {
    return {
      recent: () => this.dispatcher?.recent ?? [],
      takeWindow: () => this.dispatcher?.window.take() ?? summarize([]),
      queueDepth: () => this.scheduler?.depth ?? 0,
      busy: () => this.scheduler?.busy ?? false,
      treeBudget: () => this.engine?.info().treeBudget ?? 0,
      tree: () => this.treeStatus(),
      load: () => this.loadMonitor?.latest ?? null,
      uptimeS: () => this.uptimeS(),
      components: () => this.components(),
      recentRequests: this.cfg.telemetry.recent_requests,
    };
  }

  uptimeS(): number {
    return this.startedAt ? (performance.now() - this.startedAt) / 1000 : 0;
  }

  info(): Record<string, unknown> {
    const m = this.engine?.info();
    return {
      node_id: this.cfg.node_id,
      version: VERSION,
      model: m ? { name: m.model, context_length: m.contextLength, vocab_size: m.vocabSize, bita: m.bita, fine_tuned: m.fineTuned } : null,
      transports: { mqtt: this.mqtt?.base ?? null, socket: this.socket ? this.cfg.socket.path : null },
      limits: { max_payload_bytes: this.cfg.limits.max_payload_bytes, max_tokens: this.cfg.limits.max_tokens, queue_capacity: this.cfg.queue.capacity },
    };
  }

  /** Every part's status; the daemon is `degraded` while any part is (see health.ts). */
  components(): Components {
    return {
      engine: this.engineHealth(),
      store: this.store ? this.store.health() : { status: 'off' },
      mqtt: this.mqtt ? this.mqtt.health() : { status: 'off' },
      socket: this.socket ? this.socket.health() : { status: 'off' },
    };
  }

  engineHealth(): ComponentHealth {
    if (!this.supervisor) return { status: 'down', reason: 'not loaded' };
    const h = this.supervisor.health();
    if (h.status !== 'ok') return h;
    if (!this.scheduler?.responsive(this.cfg.lifecycle.engine_stall_ms)) return { ...h, status: 'degraded', reason: 'not making progress' };
    return h;
  }

  health(): Record<string, unknown> {
    const m = this.engine?.info();
    const components = this.components();
    const overall = overallState(components);
    return {
      state: this.state === 'online' ? overall.state : this.state,
      ...(overall.reasons.length ? { reasons: overall.reasons } : {}),
      components,
      node_id: this.cfg.node_id,
      version: VERSION,
      model: m?.model ?? null,
      context_length: m?.contextLength ?? null,
      bita: m?.bita ?? null,
      tree_budget: m?.treeBudget ?? null,
      tree: this.treeStatus(),
      queue: { depth: this.scheduler?.depth ?? 0, capacity: this.cfg.queue.capacity, busy: this.scheduler?.busy ?? false },
      engine_responsive: this.engineAlive(),
      uptime_s: Math.round(this.uptimeS()),
      requests: this.dispatcher?.stats ?? null,
      mqtt: this.mqtt ? { base: this.mqtt.base, connected: this.mqtt.connected } : null,
      load: this.loadMonitor?.latest ?? null,
      memory: memoryFigures(),
    };
  }
}

/** This process's memory (MB) and live libuv resources: what bench/soak.ts samples to tell a leak from a plateau. */
function memoryFigures(): Record<string, number> {
  const m = process.memoryUsage();
  const mb = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
  return {
    rss_mb: mb(m.rss),
    heap_used_mb: mb(m.heapUsed),
    heap_total_mb: mb(m.heapTotal),
    external_mb: mb(m.external),
    array_buffers_mb: mb(m.arrayBuffers),
    active_resources: process.getActiveResourcesInfo().length,
  };
}
