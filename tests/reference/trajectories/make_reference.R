# Frozen lme4 / geepack reference numbers for tests/test_trajectories_golden.py.
# Run from the repository root:  Rscript tests/reference/trajectories/make_reference.R
# Writes the input data sets (CSV) and reference.json beside this script.
suppressPackageStartupMessages({
  library(lme4); library(nlme); library(splines); library(geepack); library(jsonlite)
})
out_dir <- "tests/reference/trajectories"

fit_summary <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  fe <- fixef(m); se <- sqrt(diag(as.matrix(vcov(m))))
  re <- vc[vc$grp != "Residual", ]
  sds <- re[is.na(re$var2), "sdcor"]; names(sds) <- re[is.na(re$var2), "var1"]
  corr <- re[!is.na(re$var2), "sdcor"]
  list(
    fixed = setNames(as.list(unname(fe)), names(fe)),
    se = setNames(as.list(unname(se)), names(fe)),
    sd_intercept = unname(sds[1]),
    sd_slope = if (length(sds) > 1) unname(sds[2]) else NULL,
    corr = if (length(corr)) corr else NULL,
    sd_residual = sigma(m),
    theta = unname(getME(m, "theta")),
    loglik = as.numeric(logLik(m)), aic = AIC(m), bic = BIC(m),
    deviance_criterion = unname(if (isREML(m)) getME(m, "devcomp")$cmp["REML"] else deviance(m)),
    reml = isREML(m), singular = isSingular(m),
    n_obs = nobs(m), n_groups = unname(ngrps(m)[1])
  )
}
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 2e-3, rhoend = 1e-12, maxfun = 1e5),
                    check.conv.singular = "ignore")
ref <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")),
            geepack = as.character(packageVersion("geepack")))

# 7. Boundary (singular) random-slope fits, for the random-effects choice of analytics/outcomes/trajectories.py
#    (tests/test_trajectory_models.py). Written to boundary.json and boundary_*.csv, apart from reference.json, so
#    that adding them left every earlier number as it was. Run this section alone with
#      KAP_REFERENCE_SECTION=boundary Rscript tests/reference/trajectories/make_reference.R
#    Two clinics of 40 patients with 3-5 PHQ-9-like scores over 12 weeks and a true patient-specific slope (SD 0.45/wk):
#    a) "boundary_corr": starting level = -3 x slope (correlation -1): lme4's fit sits on the boundary (Lambda[1,1] = 0,
#       correlation -1, isSingular TRUE) yet its REML criterion is ~56 below the random-intercept model's, whose
#       weeks SE is ~36% too small; the boundary fit is the one to report.
#    b) "boundary_slope": no between-patient difference in starting level: lme4's (weeks | id) fit is singular, and
#       (0 + weeks | id) reaches almost the same criterion with 2 fewer parameters (lowest AIC).
#    Every structure's fit is frozen: (weeks | id), (weeks || id), (0 + weeks | id), (1 | id), REML, plus the ML fits.
structure_summary <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  re <- vc[vc$grp != "Residual", ]
  sd_of <- function(v) { r <- re[is.na(re$var2) & re$var1 == v, "sdcor"]; if (length(r)) r[1] else NULL }
  corr <- re[!is.na(re$var2), "sdcor"]
  fe <- fixef(m); se <- sqrt(diag(as.matrix(vcov(m))))
  list(fixed = setNames(as.list(unname(fe)), names(fe)), se = setNames(as.list(unname(se)), names(fe)),
       sd_intercept = sd_of("(Intercept)"), sd_slope = sd_of("weeks"), corr = if (length(corr)) corr else NULL,
       sd_residual = sigma(m), theta = as.list(unname(getME(m, "theta"))),
       loglik = as.numeric(logLik(m)), aic = AIC(m), bic = BIC(m), df = attr(logLik(m), "df"),
       criterion = unname(if (isREML(m)) getME(m, "devcomp")$cmp["REML"] else deviance(m)),
       reml = isREML(m), singular = isSingular(m), n_obs = nobs(m), n_groups = unname(ngrps(m)[1]))
}
boundary_reference <- function() {
  out <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
  for (kind in c("corr", "slope")) {
    set.seed(5)
    d <- do.call(rbind, lapply(1:40, function(i) {
      w <- sort(c(0, round(runif(sample(2:4, 1), 0.5, 12), 1)))
      b1 <- rnorm(1, 0, 0.45)
      b0 <- if (kind == "corr") -3 * b1 else 0
      data.frame(id = sprintf("b%02d", i), weeks = w,
                 y = round(18 + b0 - 0.8 * w + b1 * w + rnorm(length(w), 0, 2), 3))
    }))
    name <- paste0("boundary_", kind)
    write.csv(d, file.path(out_dir, paste0(name, ".csv")), row.names = FALSE)
    forms <- list(correlated = y ~ weeks + (weeks | id), uncorrelated = y ~ weeks + (weeks || id),
                  slope = y ~ weeks + (0 + weeks | id), intercept = y ~ weeks + (1 | id))
    out[[name]] <- list(
      reml = lapply(forms, function(f) structure_summary(lmer(f, d, control = ctrl))),
      ml = lapply(forms, function(f) structure_summary(lmer(f, d, REML = FALSE, control = ctrl))))
  }
  writeLines(toJSON(out, auto_unbox = TRUE, digits = I(15), pretty = TRUE, null = "null"),
             file.path(out_dir, "boundary.json"))
  cat("wrote", file.path(out_dir, "boundary.json"), "\n")
}
if (identical(Sys.getenv("KAP_REFERENCE_SECTION"), "boundary")) {
  boundary_reference()
  quit(save = "no")
}

# 1. sleepstudy (Belenky et al. 2003), the lme4 textbook example.
data(sleepstudy, package = "lme4")
write.csv(sleepstudy, file.path(out_dir, "sleepstudy.csv"), row.names = FALSE)
ref$sleepstudy_reml <- fit_summary(lmer(Reaction ~ Days + (Days | Subject), sleepstudy, control = ctrl))
ref$sleepstudy_ml <- fit_summary(lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = FALSE, control = ctrl))
ref$sleepstudy_intercept <- fit_summary(lmer(Reaction ~ Days + (1 | Subject), sleepstudy, control = ctrl))

# 2. Orthodont (Potthoff & Roy 1964): sex × age interaction, unbalanced group sizes (16 boys, 11 girls).
data(Orthodont, package = "nlme")
orth <- data.frame(distance = Orthodont$distance, age = Orthodont$age,
                   Subject = as.character(Orthodont$Subject), Sex = as.character(Orthodont$Sex))
write.csv(orth, file.path(out_dir, "orthodont.csv"), row.names = FALSE)
orth$Sex <- relevel(factor(orth$Sex), ref = "Male")
ref$orthodont_reml <- fit_summary(lmer(distance ~ age * Sex + (age | Subject), orth, control = ctrl))

# 3. Simulated clinic: unbalanced visits, two programs, program × weeks, a baseline covariate, a bend at 4 weeks.
set.seed(20261125)
n_pat <- 400
pat <- data.frame(id = sprintf("p%03d", 1:n_pat),
                  program = sample(c("ketamine only", "ketamine + therapy"), n_pat, replace = TRUE, prob = c(.6, .4)),
                  age = round(runif(n_pat, 20, 70)))
rows <- list()
for (i in 1:n_pat) {
  k <- sample(1:9, 1)
  w <- sort(c(0, runif(k - 1, 0.3, 30)))
  b0 <- rnorm(1, 0, 4); b1 <- rnorm(1, 0, 0.15)
  ther <- pat$program[i] == "ketamine + therapy"
  mu <- 17 + b0 - 1.5 * pmin(w, 4) - 0.1 * pmax(w - 4, 0) + (b1 - ifelse(ther, 0.08, 0)) * w +
        0.04 * (pat$age[i] - 45)
  rows[[i]] <- data.frame(id = pat$id[i], weeks = w, y = mu + rnorm(k, 0, 2.5),
                          program = pat$program[i], age = pat$age[i])
}
sim <- do.call(rbind, rows)
sim$y <- round(sim$y, 4)
write.csv(sim, file.path(out_dir, "simulated.csv"), row.names = FALSE)
sim$program <- relevel(factor(sim$program), ref = "ketamine only")
sim$age_c <- sim$age - mean(pat$age[pat$id %in% sim$id])
ref$simulated_group_reml <- fit_summary(lmer(y ~ weeks * program + age_c + (weeks | id), sim, control = ctrl))
ref$simulated_linear_ml <- fit_summary(lmer(y ~ weeks + (weeks | id), sim, REML = FALSE, control = ctrl))
sim$after4 <- pmax(sim$weeks - 4, 0)
m_pw <- lmer(y ~ weeks + after4 + (weeks | id), sim, REML = FALSE, control = ctrl)
ref$simulated_piecewise_ml <- fit_summary(m_pw)
grid <- data.frame(weeks = c(0, 2, 4, 8, 12, 20, 26)); grid$after4 <- pmax(grid$weeks - 4, 0)
ref$prediction_weeks <- grid$weeks
ref$simulated_piecewise_ml$predicted <- unname(predict(m_pw, newdata = grid, re.form = NA))
ref$simulated_piecewise_reml <- fit_summary(lmer(y ~ weeks + after4 + (weeks | id), sim, control = ctrl))
kn <- quantile(sim$weeks, c(1/3, 2/3)); bk <- range(sim$weeks)
ref$spline_knots <- list(interior = unname(kn), boundary = bk)
m_ns <- lmer(y ~ ns(weeks, knots = kn, Boundary.knots = bk) + (weeks | id), sim, REML = FALSE, control = ctrl)
ref$simulated_spline_ml <- fit_summary(m_ns)
ref$simulated_spline_ml$predicted <- unname(predict(m_ns, newdata = grid, re.form = NA))
# standard errors of the predicted means (x' V x), for the confidence band
Xg <- model.matrix(~ ns(weeks, knots = kn, Boundary.knots = bk), grid)
ref$simulated_spline_ml$predicted_se <- unname(sqrt(diag(Xg %*% as.matrix(vcov(m_ns)) %*% t(Xg))))

# 4. A singular fit: no true slope variance, few patients; lme4 flags it, we fall back to (1 | id).
set.seed(7)
sing <- do.call(rbind, lapply(1:15, function(i) {
  w <- c(0, 2, 4, 8); data.frame(id = sprintf("s%02d", i), weeks = w, y = round(15 + rnorm(1, 0, 2) - 0.5 * w + rnorm(4, 0, 3), 3))
}))
write.csv(sing, file.path(out_dir, "singular.csv"), row.names = FALSE)
ref$singular_slope <- fit_summary(lmer(y ~ weeks + (weeks | id), sing, control = ctrl))
ref$singular_intercept <- fit_summary(lmer(y ~ weeks + (1 | id), sing, control = ctrl))

# 5. GEE: repeated binary abstinence, exchangeable working correlation (geepack, robust SEs).
set.seed(11)
gee_rows <- do.call(rbind, lapply(1:300, function(i) {
  grp <- if (i <= 150) "a" else "b"; u <- rnorm(1, 0, 1); w <- c(4, 8, 12, 26)[1:sample(2:4, 1)]
  eta <- -0.2 + 0.05 * w + 0.5 * (grp == "b") + u
  data.frame(id = i, weeks = w, group = grp, abstinent = rbinom(length(w), 1, plogis(eta)))
}))
write.csv(gee_rows, file.path(out_dir, "gee.csv"), row.names = FALSE)
g <- geeglm(abstinent ~ weeks + group, id = id, data = gee_rows, family = binomial, corstr = "exchangeable")
sg <- summary(g)$coefficients
ref$gee <- list(estimate = setNames(as.list(sg[, "Estimate"]), rownames(sg)),
                se = setNames(as.list(sg[, "Std.err"]), rownames(sg)),
                alpha = unname(g$geese$alpha))

# 6. More GEE references for analytics/engines/gee.py (tests/test_gee.py). geeglm's default control stops when every
#    change is below epsilon = 1e-4, i.e. up to ~1e-5 from the solution of the estimating equations; these fits use
#    epsilon = 1e-12 so that the frozen numbers are the solution itself (the `gee` entry above keeps the default).
#    geepack's moment estimators have no degrees-of-freedom correction: scale (gamma) = sum(r^2) / N and
#    alpha = sum over within-cluster pairs of r_ij r_ik / (n_pairs * scale), with Pearson residuals r.
#    Section 6 was added after sections 1-5 were frozen: its three entries were merged into the existing
#    reference.json, whose earlier numbers were kept as they were (a rerun reproduces sections 1-5 only to the
#    lme4 optimiser's tolerance, ~1e-6 relative in the variance components; the GEE entries exactly).
tight <- geese.control(epsilon = 1e-12, maxit = 200)
gee_summary <- function(g) {
  sg <- summary(g)$coefficients
  list(estimate = setNames(as.list(sg[, "Estimate"]), rownames(sg)),
       se = setNames(as.list(sg[, "Std.err"]), rownames(sg)),
       alpha = unname(g$geese$alpha), scale = unname(g$geese$gamma),
       n_obs = length(g$y), n_clusters = length(g$geese$clusz))
}
# 6a. the abstinence data above, with the group x weeks interaction (the dashboard's default model)
ref$gee_interaction <- gee_summary(geeglm(abstinent ~ weeks * group, id = id, data = gee_rows, family = binomial,
                                          corstr = "exchangeable", control = tight))
# 6b. Ohio children's wheeze (Ware et al. 1984; geepack's `ohio`): 537 children at ages 7-10, maternal smoking.
data(ohio, package = "geepack")
write.csv(ohio, file.path(out_dir, "ohio.csv"), row.names = FALSE)
ref$gee_ohio <- gee_summary(geeglm(resp ~ age + smoke, id = id, data = ohio, family = binomial,
                                   corstr = "exchangeable", control = tight))
# 6c. Simulated clinic: 1-8 assessments (singletons included), three programs, program x weeks, strong clustering.
#     (Integer ids: geeglm with character ids hung here, geepack 1.3.9.)
set.seed(2121)
clinic <- do.call(rbind, lapply(1:500, function(i) {
  prog <- sample(c("ketamine only", "ketamine + therapy", "ketamine + IOP"), 1, prob = c(.5, .3, .2))
  k <- sample(1:8, 1); w <- sort(round(runif(k, 1, 40), 2)); u <- rnorm(1, 0, 1.5)
  eta <- 0.3 - 0.02 * w + 0.4 * (prog == "ketamine + therapy") + 0.01 * w * (prog == "ketamine + IOP") + u
  data.frame(id = i, weeks = w, program = prog, abstinent = rbinom(k, 1, plogis(eta)))
}))
write.csv(clinic, file.path(out_dir, "gee_clinic.csv"), row.names = FALSE)
clinic$program <- relevel(factor(clinic$program), ref = "ketamine only")
ref$gee_clinic <- gee_summary(geeglm(abstinent ~ weeks * program, id = id, data = clinic, family = binomial,
                                     corstr = "exchangeable", control = tight))

writeLines(toJSON(ref, auto_unbox = TRUE, digits = I(15), pretty = TRUE, null = "null"),
           file.path(out_dir, "reference.json"))
boundary_reference()  # section 7 (boundary.json)
cat("wrote", file.path(out_dir, "reference.json"), "\n")
