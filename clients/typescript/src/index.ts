export * from './http.js';
export * from './signature.js';
export * from './provider.js';
export * from './storage.js';
export * from './sse.js';
export * from './device.js';
export * from './operator.js';
export type * as api from './generated.js';
