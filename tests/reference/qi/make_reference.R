# Reference numbers for tests/test_qi.py and tests/test_safety.py, computed with base R only
# (R 4.2; no packages). Run from this folder:  Rscript make_reference.R
# Inputs: pchart_input.csv, nhs_accidents.csv, funnel_input.csv, funnel_input_plain.csv (committed beside it).
# Outputs: wilson.csv, poisson.csv, newcombe.csv, pchart_reference.csv, laney_nhs_reference.csv,
#          funnel_limits.csv, funnel_dispersion.csv.
options(digits = 17)

# --- Wilson score interval: prop.test without continuity correction -----------------------------------
wx <- c(0, 1, 3, 7, 10, 25, 40, 50)
wn <- c(10, 10, 12, 20, 10, 80, 41, 50)
wil <- do.call(rbind, lapply(seq_along(wx), function(i) {
  ci95 <- suppressWarnings(prop.test(wx[i], wn[i], correct = FALSE, conf.level = 0.95)$conf.int)
  ci90 <- suppressWarnings(prop.test(wx[i], wn[i], correct = FALSE, conf.level = 0.90)$conf.int)
  data.frame(x = wx[i], n = wn[i], low95 = ci95[1], high95 = ci95[2], low90 = ci90[1], high90 = ci90[2])
}))
write.csv(wil, "wilson.csv", row.names = FALSE)

# --- Exact Poisson interval for x events over t (rate) --------------------------------------------------
px <- c(0, 1, 4, 59, 120)
pt <- c(50, 100, 10, 2532, 400)
poi <- do.call(rbind, lapply(seq_along(px), function(i) {
  ci <- poisson.test(px[i], pt[i], conf.level = 0.95)$conf.int
  data.frame(x = px[i], t = pt[i], low = ci[1], high = ci[2])
}))
write.csv(poi, "poisson.csv", row.names = FALSE)

# --- Newcombe (1998) hybrid score interval for p2 - p1 (method 10), from the Wilson limits ----------------
nc_in <- data.frame(x1 = c(5, 20, 0), n1 = c(20, 50, 15), x2 = c(12, 15, 4), n2 = c(25, 60, 16))
nc <- do.call(rbind, lapply(seq_len(nrow(nc_in)), function(i) {
  r <- nc_in[i, ]
  w1 <- prop.test(r$x1, r$n1, correct = FALSE)$conf.int
  w2 <- suppressWarnings(prop.test(r$x2, r$n2, correct = FALSE)$conf.int)
  p1 <- r$x1 / r$n1; p2 <- r$x2 / r$n2; d <- p2 - p1
  data.frame(r, diff = d, low = d - sqrt((p2 - w2[1])^2 + (w1[2] - p1)^2),
             high = d + sqrt((w2[2] - p2)^2 + (p1 - w1[1])^2))
}))
write.csv(nc, "newcombe.csv", row.names = FALSE)

# --- p-chart and Laney p' chart, by their formulas --------------------------------------------------------
pchart <- function(x, n) {
  pbar <- sum(x) / sum(n)
  p <- x / n
  s <- sqrt(pbar * (1 - pbar) / n)
  z <- (p - pbar) / s
  sz <- mean(abs(diff(z))) / 1.128
  data.frame(p = p, centre = pbar, sigma = s, z = z,
             lcl_p = pmax(0, pbar - 3 * s), ucl_p = pmin(1, pbar + 3 * s),
             lcl_pp = pmax(0, pbar - 3 * s * sz), ucl_pp = pmin(1, pbar + 3 * s * sz),
             sigma_z = sz, chi2 = sum(z^2), chi2_p = pchisq(sum(z^2), length(x) - 1, lower.tail = FALSE))
}
pin <- read.csv("pchart_input.csv")
write.csv(cbind(pin, pchart(pin$x, pin$n)), "pchart_reference.csv", row.names = FALSE)
nhs <- read.csv("nhs_accidents.csv")
write.csv(cbind(nhs, pchart(nhs$r, nhs$n)), "laney_nhs_reference.csv", row.names = FALSE)

# --- Funnel limits (Spiegelhalter 2005) ---------------------------------------------------------------------
# exact binomial limit with interpolation, appendix A.1.1
binom_limit <- function(theta, n, q) {
  r <- qbinom(q, n, theta)
  alpha <- (pbinom(r, n, theta) - q) / dbinom(r, n, theta)
  (r - alpha) / n
}
# over-dispersion from 10%-winsorised z-scores (quantile type 7), DerSimonian-Laird tau^2
dispersion <- function(x, n) {
  theta <- sum(x) / sum(n)
  v <- theta * (1 - theta) / n
  z <- (x / n - theta) / sqrt(v)
  q <- quantile(z, c(0.1, 0.9), type = 7, names = FALSE)
  zw <- pmin(pmax(z, q[1]), q[2])
  k <- length(z)
  phi <- sum(zw^2) / k
  w <- 1 / v
  tau2 <- max(0, (k * phi - (k - 1)) / (sum(w) - sum(w^2) / sum(w)))
  data.frame(theta = theta, phi = phi, phi_p = pchisq(k * phi, k - 1, lower.tail = FALSE), tau2 = tau2)
}
lim_rows <- list()
disp_rows <- list()
for (f in c("funnel_input.csv", "funnel_input_plain.csv")) {
  u <- read.csv(f)
  d <- dispersion(u$x, u$n)
  disp_rows[[f]] <- data.frame(file = f, d)
  for (cl in c(0.95, 0.998)) {
    zc <- qnorm(0.5 + cl / 2)
    v <- d$theta * (1 - d$theta) / u$n
    lim_rows[[paste(f, cl)]] <- data.frame(
      file = f, unit = u$unit, n = u$n, conf_level = cl,
      exact_low = binom_limit(d$theta, u$n, (1 - cl) / 2), exact_high = binom_limit(d$theta, u$n, (1 + cl) / 2),
      mult_low = pmax(0, d$theta - zc * sqrt(d$phi * v)), mult_high = pmin(1, d$theta + zc * sqrt(d$phi * v)),
      add_low = pmax(0, d$theta - zc * sqrt(v + d$tau2)), add_high = pmin(1, d$theta + zc * sqrt(v + d$tau2)))
  }
}
write.csv(do.call(rbind, lim_rows), "funnel_limits.csv", row.names = FALSE)
write.csv(do.call(rbind, disp_rows), "funnel_dispersion.csv", row.names = FALSE)
cat("reference files written\n")
