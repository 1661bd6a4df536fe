/**
 * N-gram drafts: a table of what the model itself tends to say next (counted by the toolchain on its
 * own greedy output, `models/bitatool/ngram.py`), walked greedily into a draft chain. Like every
 * draft it only proposes; verification decides.
 */

interface Order {
  n: number;
  keys: Float64Array; // sorted; key = fold(t -> key * V + t) over the n context tokens, oldest first
  next: Int32Array;
}

const MAGIC = 0x31474e42; // "BNG1" little-endian

export class NgramTable {
  private readonly scratch: Int32Array;

  private constructor(
    readonly V: number,
    private readonly orders: Order[], // longest n first
    maxChain: number,
  ) {
    this.scratch = new Int32Array((orders[0]?.n ?? 0) + maxChain);
  }

  /** Parses ngram.bin (layout in ngram.py); maxChain bounds the chains chain() will write. */
  static parse(bytes: Uint8Array, maxChain = 16): NgramTable {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const fail = (why: string) => new Error(`ngram table: ${why}`);
    if (bytes.byteLength < 12 || view.getUint32(0, true) !== MAGIC) throw fail('bad magic (not a BNG1 file)');
    const V = view.getInt32(4, true);
    const count = view.getInt32(8, true);
    let at = 12;
    const orders: Order[] = [];
    for (let o = 0; o < count; o++) {
      if (at + 8 > bytes.byteLength) throw fail('truncated');
      const n = view.getInt32(at, true);
      const K = view.getInt32(at + 4, true);
      at += 8;
      if (n < 1 || K < 0 || at + K * 12 > bytes.byteLength) throw fail(`order ${o} is truncated or invalid`);
      const keys = new Float64Array(K);
      const next = new Int32Array(K);
      for (let i = 0; i < K; i++) keys[i] = view.getFloat64(at + 8 * i, true);
      at += 8 * K;
      for (let i = 0; i < K; i++) next[i] = view.getInt32(at + 4 * i, true);
      at += 4 * K;
      orders.push({ n, keys, next });
    }
    orders.sort((a, b) => b.n - a.n);
    return new NgramTable(V, orders, maxChain);
  }

  /** Most likely next token after ctx[0..length), longest known context first; -1 if none. */
  predict(ctx: Int32Array, length: number): number {
    const V = this.V;
    for (const { n, keys, next } of this.orders) {
      if (length < n) continue;
      let key = 0;
      for (let i = length - n; i < length; i++) key = key * V + ctx[i];
      let lo = 0;
      let hi = keys.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const k = keys[mid];
        if (k === key) return next[mid];
        if (k < key) lo = mid + 1;
        else hi = mid - 1;
      }
    }
    return -1;
  }

  /** Greedy walk: up to maxLength predicted tokens after tokens[0..length) into out; returns the count. */
  chain(tokens: Int32Array, length: number, out: Int32Array, outOffset: number, maxLength: number): number {
    const s = this.scratch;
    const ctx = Math.min(length, s.length - maxLength, this.orders[0]?.n ?? 0);
    if (ctx < 0) return 0;
    for (let i = 0; i < ctx; i++) s[i] = tokens[length - ctx + i];
    let len = ctx;
    let count = 0;
    while (count < maxLength) {
      const t = this.predict(s, len);
      if (t < 0) break;
      out[outOffset + count++] = t;
      s[len++] = t;
    }
    return count;
  }
}
