/**
 * Bounded priority queue: higher `priority` first, FIFO within a priority. Capacities are small
 * (tens), so a sorted array beats a heap on clarity and supports removal by identity for cancels.
 */
export class BoundedPriorityQueue<T extends { priority: number }> {
  private items: { item: T; order: number }[] = [];
  private nextOrder = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.items.length;
  }

  /** False when full: the caller answers `busy` at once instead of waiting. */
  push(item: T): boolean {
    if (this.items.length >= this.capacity) return false;
    const entry = { item, order: this.nextOrder++ };
    let i = this.items.length;
    while (i > 0 && this.items[i - 1].item.priority < item.priority) i--;
    this.items.splice(i, 0, entry);
    return true;
  }

  shift(): T | undefined {
    return this.items.shift()?.item;
  }

  remove(item: T): boolean {
    const i = this.items.findIndex((e) => e.item === item);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  /** Empties the queue and returns what was waiting, in service order. */
  drain(): T[] {
    const out = this.items.map((e) => e.item);
    this.items = [];
    return out;
  }

  values(): T[] {
    return this.items.map((e) => e.item);
  }
}
