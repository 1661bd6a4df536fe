#!/usr/bin/env node
// The CLI entry: runs the TypeScript sources through tsx (no build step on boards).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
