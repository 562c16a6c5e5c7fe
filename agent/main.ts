// placeholder until the agent lands
export {};
