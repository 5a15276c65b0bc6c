// Unary op values and derivatives, shared by the forward and backward kernels.
const SQRT_2_OVER_PI: f32 = 0.7978846;
const FRAC_1_SQRT_2: f32 = 0.70710677;
const FRAC_1_SQRT_2PI: f32 = 0.3989423;

// erf with |error| < 1.2e-7 in exact arithmetic (Numerical Recipes erfc fit), as on the CPU.
fn erf_(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = 1.0 - t * exp(p);
    return select(-r, r, x >= 0.0);
}

fn sigmoid_(x: f32) -> f32 {
    let e = exp(-abs(x));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), x >= 0.0);
}

// tanh without overflow for large |x|.
fn tanh_(x: f32) -> f32 {
    let t = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - t) / (1.0 + t);
}

// x^p with the CPU's `powf` conventions for x <= 0 and integer p.
fn pow_(x: f32, p: f32) -> f32 {
    if p == 0.0 {
        return 1.0;
    }
    if x == 0.0 {
        return select(bitcast<f32>(0x7f800000u), 0.0, p > 0.0);
    }
    if x < 0.0 {
        if fract(p) != 0.0 {
            return bitcast<f32>(0x7fc00000u);
        }
        let m = pow(-x, p);
        return select(m, -m, (i32(p) & 1) == 1);
    }
    return pow(x, p);
}

fn forward(op: u32, v: f32, c0: f32, c1: f32) -> f32 {
    switch op {
        case 0u: { return -v; }
        case 1u: { return exp(v); }
        case 2u: { return log(v); }
        case 3u: { return sqrt(v); }
        case 4u: { return 1.0 / v; }
        case 5u: { return abs(v); }
        case 6u: { return select(0.0, v, v > 0.0); }
        case 7u: { return 0.5 * v * (1.0 + erf_(v * FRAC_1_SQRT_2)); }
        case 8u: { return 0.5 * v * (1.0 + tanh_(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v))); }
        case 9u: { return v * sigmoid_(v); }
        case 10u: { return sigmoid_(v); }
        case 11u: { return max(v, 0.0) + log(1.0 + exp(-abs(v))); }
        case 12u: { return tanh_(v); }
        case 13u: { return v * v; }
        case 14u: { return pow_(v, c0); }
        case 15u: { return min(max(v, c0), c1); }
        case 16u: { return v + c0; }
        case 17u: { return v * c0; }
        case 18u: { return v / c0; }
        case 19u: { return c0 - v; }
        default: { return v; }
    }
}

// d/dx given what the op saves (input x or output y), times nothing: the caller multiplies by g.
fn derivative(op: u32, s: f32, c0: f32, c1: f32) -> f32 {
    switch op {
        case 0u, 19u: { return -1.0; }
        case 16u: { return 1.0; }
        case 17u: { return c0; }
        case 18u: { return 1.0 / c0; }
        case 1u: { return s; }
        case 2u: { return 1.0 / s; }
        case 3u: { return 0.5 / s; }
        case 4u: { return -s * s; }
        case 5u: { return sign(s); }
        case 6u: { return select(0.0, 1.0, s > 0.0); }
        case 7u: { return 0.5 * (1.0 + erf_(s * FRAC_1_SQRT_2)) + s * FRAC_1_SQRT_2PI * exp(-0.5 * s * s); }
        case 8u: {
            let t = tanh_(SQRT_2_OVER_PI * (s + 0.044715 * s * s * s));
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * s * s);
            return 0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * du;
        }
        case 9u: {
            let q = sigmoid_(s);
            return q * (1.0 + s * (1.0 - q));
        }
        case 10u: { return s * (1.0 - s); }
        case 11u: { return sigmoid_(s); }
        case 12u: { return 1.0 - s * s; }
        case 13u: { return 2.0 * s; }
        case 14u: { return c0 * pow_(s, c0 - 1.0); }
        case 15u: { return select(0.0, 1.0, s > c0 && s < c1); }
        default: { return 1.0; }
    }
}

