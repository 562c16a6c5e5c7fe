// The version every tp binary reports; the tunnel protocol version both sides negotiate.
export const VERSION = '0.1.0';
// 3: early data (tunnel/messages.ts EARLY_DATA_VERSION).
export const TUNNEL_VERSION = 3;
