import t from 'tap';
import { BoundedPriorityQueue } from '../../src/daemon/scheduler/queue.js';

t.test('higher priority is served first, FIFO within a priority', async (t) => {
  const q = new BoundedPriorityQueue<{ priority: number; id: string }>(10);
  for (const [id, priority] of [['a', 5], ['b', 9], ['c', 5], ['d', 0], ['e', 9]] as const) q.push({ id, priority });
  const order: string[] = [];
  for (let x = q.shift(); x; x = q.shift()) order.push(x.id);
  t.same(order, ['b', 'e', 'a', 'c', 'd']);
});

t.test('a full queue refuses the next item at once', async (t) => {
  const q = new BoundedPriorityQueue<{ priority: number }>(2);
  t.ok(q.push({ priority: 1 }));
  t.ok(q.push({ priority: 1 }));
  t.notOk(q.push({ priority: 9 }), 'even a high-priority item is refused');
  t.equal(q.size, 2);
});

t.test('removal by identity and drain keep service order', async (t) => {
  const q = new BoundedPriorityQueue<{ priority: number; id: number }>(5);
  const items = [1, 2, 3].map((id) => ({ id, priority: id }));
  items.forEach((i) => q.push(i));
  t.ok(q.remove(items[1]));
  t.notOk(q.remove(items[1]));
  t.same(q.drain().map((i) => i.id), [3, 1]);
  t.equal(q.size, 0);
});
