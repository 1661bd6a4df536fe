export * from '../../../src/daemon/testing/mosquitto.js';
