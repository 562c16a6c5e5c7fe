// The version every tp binary reports; the tunnel protocol version both sides negotiate.
export const VERSION = '0.1.0';
export const TUNNEL_VERSION = 2;
