/**
 * Every topic the daemon publishes to is decided here: its own state/info/telemetry, the default
 * reply topics `<prefix>/response/<transaction>`, and the reply routes a request names (MQTT 5
 * Response Topic or `reply_to`). A topic the broker refuses costs the connection (mosquitto and
 * aedes disconnect the publisher) and mqtt.js resends a stored QoS 1 publish on every reconnect,
 * so one bad request field would otherwise take the MQTT side down for good (issue 7: 208
 * disconnects in 7 minutes, 0/10 health requests answered).
 */

/**
 * Longest topic the daemon publishes to, in UTF-8 bytes. MQTT allows 65 535; nothing bitad needs
 * comes near 512 (the request schema's `reply_to` limit before this rule existed).
 */
export const MAX_TOPIC_BYTES = 512;
/**
 * Most levels in a topic. mosquitto refuses more than 200 (TOPIC_HIERARCHY_LIMIT) and aedes'
 * matcher (qlobber, max_words 100) throws on a 106-level topic, disconnecting the publisher.
 */
export const MAX_TOPIC_LEVELS = 32;
/** A transaction is echoed and used as one topic level; 128 characters as before issue 7. */
export const MAX_TRANSACTION_CHARS = 128;

/** Topic levels under `<base_topic>/<node>/` that belong to the daemons, never to a named reply route. */
const NODE_OWN = new Set(['state', 'info', 'telemetry']);
const NODE_TREES = new Set(['request', 'response']);

/**
 * Why `text` cannot appear in a topic, or null. mosquitto refuses (and disconnects on) what its
 * UTF-8 check refuses: lone surrogates, C0 and C1 controls, DEL, and the noncharacters U+FDD0–FDEF
 * and U+xFFFE/xFFFF; `+` and `#` are wildcards, never valid in a published topic.
 */
function characterProblem(text: string): string | null {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        const cp = ((c - 0xd800) << 10) + (next - 0xdc00) + 0x10000;
        if ((cp & 0xfffe) === 0xfffe) return `contains the noncharacter U+${hex(cp)}`;
        i++;
        continue;
      }
      return 'is not valid UTF-8 (lone surrogate)';
    }
    if (c >= 0xdc00 && c <= 0xdfff) return 'is not valid UTF-8 (lone surrogate)';
    if (c <= 0x1f || (c >= 0x7f && c <= 0x9f)) return `contains the control character U+${hex(c)}`;
    if ((c >= 0xfdd0 && c <= 0xfdef) || c === 0xfffe || c === 0xffff) return `contains the noncharacter U+${hex(c)}`;
    if (c === 0x2b || c === 0x23) return 'contains a wildcard (+ or #)';
  }
  return null;
}

function hex(c: number): string {
  return c.toString(16).toUpperCase().padStart(4, '0');
}

/** Why the daemon may not publish to `topic` whatever the namespace, or null. */
export function topicProblem(topic: string): string | null {
  if (topic.length === 0) return 'is empty';
  const chars = characterProblem(topic);
  if (chars) return chars;
  if (topic.startsWith('$')) return 'starts with $ (reserved for the broker)';
  const bytes = Buffer.byteLength(topic);
  if (bytes > MAX_TOPIC_BYTES) return `is ${bytes} bytes long (limit ${MAX_TOPIC_BYTES})`;
  const levels = topic.split('/').length;
  if (levels > MAX_TOPIC_LEVELS) return `has ${levels} levels (limit ${MAX_TOPIC_LEVELS})`;
  return null;
}

/**
 * Why `txn` cannot be a transaction, or null. It becomes one level of `<prefix>/response/<txn>`:
 * no `/`, nothing topicProblem refuses; a leading `$` is fine inside a topic. UUIDs and ordinary
 * ids are valid.
 */
export function transactionProblem(txn: string): string | null {
  if (txn.length === 0) return 'is empty';
  if (txn.length > MAX_TRANSACTION_CHARS) return `is ${txn.length} characters long (limit ${MAX_TRANSACTION_CHARS})`;
  if (txn.includes('/')) return 'contains "/" (it is used as one topic level)';
  return characterProblem(txn);
}

export interface TopicPolicyOptions {
  baseTopic: string;
  nodeId: string;
  /** Named reply routes must equal one of these or lie below it. */
  replyPrefixes: readonly string[];
}

/** The default reply namespace for clients that name their own reply topic. */
export const defaultReplyPrefixes = (baseTopic: string): string[] => [`${baseTopic}/reply/`];

export class TopicPolicy {
  /** `<base_topic>/<node_id>`: this node's state, info, telemetry, requests and default replies. */
  readonly base: string;
  /** Requests to `<base_topic>/fleet/request/+` are answered under `<base_topic>/fleet`. */
  readonly fleet: string;
  private readonly baseLevels: string[];
  private readonly prefixes: string[];

  /** Throws on a configuration that would make the daemon publish to an invalid topic. */
  constructor(o: TopicPolicyOptions) {
    this.base = `${o.baseTopic}/${o.nodeId}`;
    this.fleet = `${o.baseTopic}/fleet`;
    const baseProblem = topicProblem(`${this.base}/telemetry`);
    if (baseProblem) throw new Error(`mqtt.base_topic: "${o.baseTopic}/${o.nodeId}/telemetry" ${baseProblem}`);
    this.baseLevels = o.baseTopic.split('/');
    this.prefixes = o.replyPrefixes.map((p) => p.replace(/\/+$/, ''));
    for (const p of this.prefixes) {
      const problem = p.length === 0 ? 'is empty' : topicProblem(p);
      if (problem) throw new Error(`mqtt.reply_prefixes: "${p}" ${problem}`);
    }
  }

  /** This node's own topics. */
  own(sub: 'state' | 'info' | 'telemetry'): string {
    return `${this.base}/${sub}`;
  }

  /**
   * The request prefix (`<base>` or the fleet's) of a request topic, or null when it is not ours.
   * The subscription `request/+` also matches an empty level: that kind is '' and is answered
   * `unknown_request` like any other unknown kind, never left without a reply.
   */
  requestPrefix(topic: string): { prefix: string; kind: string } | null {
    for (const prefix of [this.base, this.fleet]) {
      if (!topic.startsWith(`${prefix}/request/`)) continue;
      const kind = topic.slice(prefix.length + '/request/'.length);
      if (!kind.includes('/')) return { prefix, kind };
    }
    return null;
  }

  /** `<prefix>/response/<transaction>`, or `<prefix>/response/error` when there is no usable transaction. */
  defaultReply(prefix: string, transaction: string | null): string {
    const level = transaction !== null && transactionProblem(transaction) === null ? transaction : 'error';
    return `${prefix}/response/${level}`;
  }

  /**
   * Why a request may not name `topic` as its reply route, or null. Named routes must be valid
   * topics inside the reply namespace and never a daemon topic (any node's request, response,
   * state, info or telemetry): otherwise a client could make the daemon publish where the broker's
   * ACL refuses the client itself, forge another client's replies, or loop a request into itself.
   */
  namedReplyProblem(topic: string): string | null {
    const problem = topicProblem(topic);
    if (problem) return problem;
    const reserved = this.reservedProblem(topic);
    if (reserved) return reserved;
    if (!this.prefixes.some((p) => topic === p || topic.startsWith(`${p}/`))) {
      return `is outside the reply namespace (${this.prefixes.map((p) => `${p}/…`).join(', ')})`;
    }
    return null;
  }

  private reservedProblem(topic: string): string | null {
    const levels = topic.split('/');
    const n = this.baseLevels.length;
    if (levels.length < n + 2 || this.baseLevels.some((l, i) => levels[i] !== l)) return null;
    const what = levels[n + 1];
    if (NODE_TREES.has(what)) return `is a daemon ${what} topic`;
    if (levels.length === n + 2 && NODE_OWN.has(what)) return `is a daemon ${what} topic`;
    return null;
  }
}
