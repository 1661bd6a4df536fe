/**
 * The embedded broker (aedes) for single-board setups: loopback only, Nagle off on accepted
 * sockets (platform-notes: Nagle adds 44–88 ms per round trip). aedes speaks MQTT 3.1.1 only.
 */
import { createServer, type AddressInfo, type Server } from 'node:net';

export interface EmbeddedBroker {
  port: number;
  close(): Promise<void>;
}

export async function startEmbeddedBroker(host: string, port: number): Promise<EmbeddedBroker> {
  // Loaded only when used: aedes and its dependencies add ~12 MB of RSS to a daemon that talks
  // to an external broker.
  const { Aedes } = await import('aedes');
  const aedes = await Aedes.createBroker();
  const server: Server = createServer({ noDelay: true }, aedes.handle);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    // The port was taken: aedes's heartbeat timer would otherwise keep the failed daemon alive.
    await new Promise<void>((resolve) => aedes.close(() => resolve()));
    throw e;
  }
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        // aedes.close ends the client connections; only then can the listener close.
        aedes.close(() => server.close(() => resolve()));
      }),
  };
}
